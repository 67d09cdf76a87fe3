"""Item text from the items table through a format template, e.g. `"{title}; {genres}"`.

Missing values (null or blank) are rendered as empty text and counted per field in the report that
is saved beside the embeddings — never replaced by made-up text.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from raylrec.errors import DataError

MOVIELENS_TEMPLATE = "{title}; {genres}"
AMAZON_TEMPLATE = "Title: {title}, Description: {description}"  # the official Amazon meta files (readers: amazon-*)
FALLBACK_TEMPLATE = "{title}"
# Dataset name (exact) or name prefix → default item template; exact names first, then the first matching prefix.
# The named Amazon copies hold titles only (amazon14-beauty), or UniSRec's "title. categories. brand." text read
# into `title` (amazon18-scientific).
DATASET_TEMPLATES = (
    ("amazon14-beauty", FALLBACK_TEMPLATE),
    ("amazon18-scientific", FALLBACK_TEMPLATE),
    ("ml-", MOVIELENS_TEMPLATE),
    ("movielens", MOVIELENS_TEMPLATE),
    ("amazon", AMAZON_TEMPLATE),
)

# Dataset-name prefix → the instruction of prompts over a user's history (IDLE-Adapter §4.1 adapts the wording to
# the domain: movies watched, products bought); the first match wins.
INSTRUCTIONS = (
    (
        ("ml-", "movielens"),
        "Your task is to recommend a movie the user may want to watch next based on their watching history: {history}.",
    ),
    (
        ("amazon",),
        "Your task is to recommend a product the user may be interested in based on their purchase history: {history}.",
    ),
)
GENERIC_INSTRUCTION = (
    "Your task is to recommend an item the user may be interested in based on their history: {history}."
)


def default_template(dataset: str) -> str:
    """The item-text template of a dataset (see DATASET_TEMPLATES)."""
    name = dataset.lower()
    exact = dict(DATASET_TEMPLATES).get(name)
    return exact or next(
        (template for prefix, template in DATASET_TEMPLATES if name.startswith(prefix)), FALLBACK_TEMPLATE
    )


def default_instruction(dataset: str) -> str:
    """The domain's instruction for prompts over a user's history, with one `{history}` slot."""
    name = dataset.lower()
    return next((text for prefixes, text in INSTRUCTIONS if name.startswith(prefixes)), GENERIC_INSTRUCTION)


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

    @cached_property
    def blank_items(self) -> list[int]:
        """Items whose rendered text is blank: nothing to encode (a decoder without BOS would see no token)."""
        return [item for item, text in zip(self.items, self.texts) if not text.strip()]


def render_texts(items: pd.DataFrame, template: str) -> RenderedTexts:
    """One text per row of the items table (columns `item` and the template's fields)."""
    fields = template_fields(template)
    absent = [name for name in fields if name not in items.columns]
    if absent:
        raise DataError(
            f"the items table has no column {', '.join(absent)} used by the text template {template!r}; "
            f"its columns: {', '.join(items.columns)}"
        )
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
