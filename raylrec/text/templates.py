"""Item text from the items table through a format template, e.g. `"{title}; {genres}"`.

Missing values (null or blank) are rendered as empty text and counted per field in the report that
is saved beside the embeddings — never replaced by made-up text.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field

import pandas as pd

from raylrec.errors import DataError

MOVIELENS_TEMPLATE = "{title}; {genres}"
AMAZON_TEMPLATE = "Title: {title}, Description: {description}"
FALLBACK_TEMPLATE = "{title}"
# Dataset-name prefix → default template; the first match wins.
DATASET_TEMPLATES = (("ml-", MOVIELENS_TEMPLATE), ("movielens", MOVIELENS_TEMPLATE), ("amazon", AMAZON_TEMPLATE))


def default_template(dataset: str) -> str:
    name = dataset.lower()
    return next((template for prefix, template in DATASET_TEMPLATES if name.startswith(prefix)), FALLBACK_TEMPLATE)


def template_fields(template: str) -> list[str]:
    """The field names a template uses, in order; positional or attribute placeholders are rejected."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise DataError(f"text template {template!r} is not a valid format string: {err}") from err
    bad = [name for name in names if not name.isidentifier()]
    if bad or not names:
        raise DataError(f"text template {template!r} must name item fields like {{title}}; bad fields: {bad}")
    return list(dict.fromkeys(names))


@dataclass
class RenderedTexts:
    items: list[int]  # item index (1..N), same order as texts
    texts: list[str]
    missing: dict[str, int] = field(default_factory=dict)  # field → items where it was null or blank
    empty_texts: int = 0  # items whose every field was missing

    @property
    def text_hash(self) -> str:
        digest = hashlib.sha256()
        for item, text in zip(self.items, self.texts):
            digest.update(f"{item}\t{text}\n".encode())
        return digest.hexdigest()


def render_texts(items: pd.DataFrame, template: str) -> RenderedTexts:
    """One text per row of the items table (columns `item` and the template's fields)."""
    fields = template_fields(template)
    absent = [name for name in fields if name not in items.columns]
    if absent:
        raise DataError(f"the items table has no column {', '.join(absent)} used by the text template {template!r}; "
                        f"its columns: {', '.join(items.columns)}")
    values = {}
    missing = {}
    for name in fields:
        column = items[name].astype("string").str.strip()
        blank = column.isna() | (column == "")
        missing[name] = int(blank.sum())
        values[name] = column.fillna("").tolist()
    texts = [template.format(**{name: values[name][row] for name in fields}) for row in range(len(items))]
    empty = sum(all(values[name][row] == "" for name in fields) for row in range(len(items)))
    return RenderedTexts([int(i) for i in items["item"]], texts, missing, empty)
