"""The official Amazon review dumps of the McAuley lab, as users download them.

- 2014 (McAuley et al., SIGIR'15): `reviews_<Category>[_5].json.gz`, one JSON object per line (`reviewerID`, `asin`,
  `overall`, `unixReviewTime`); `meta_<Category>.json.gz`, one **Python literal** per line (single quotes), read
  with `ast.literal_eval` (literals only, never code).
- 2018 (Ni et al., EMNLP'19): `<Category>[_5].json.gz` (same review fields) and `meta_<Category>.json.gz` (JSON
  lines; `description` is a list, categories are `category`; some items are listed more than once).
- 2023 (Hou et al., "Bridging Language and Items for Retrieval and Recommendation", 2024): `<Category>.jsonl.gz`
  (`user_id`, `parent_asin`, `rating`, `timestamp` in milliseconds) and `meta_<Category>.jsonl.gz`; items are
  identified by `parent_asin`, as in that release's own benchmarks.

Reviews are read with pyarrow's JSON reader (only the needed fields); meta lines one by one, since the 2014 ones
are not JSON. Item text fields come out as plain strings: title, description, categories, brand, price.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson

from raylrec.errors import DataError

YEARS = ("2014", "2018", "2023")
# The review fields of each release → the canonical interaction fields.
REVIEW_FIELDS = {
    "2014": {"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "timestamp"},
    "2018": {"reviewerID": "user_id", "asin": "item_id", "overall": "rating", "unixReviewTime": "timestamp"},
    "2023": {"user_id": "user_id", "parent_asin": "item_id", "rating": "rating", "timestamp": "timestamp"},
}
META_ID = {"2014": "asin", "2018": "asin", "2023": "parent_asin"}
ITEM_COLUMNS = ("item_id", "title", "description", "categories", "brand", "price")


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_reviews(path: Path, year: str) -> pa.Table:
    """The review file's interaction fields, renamed to user_id, item_id, rating, timestamp (nulls where absent)."""
    fields = REVIEW_FIELDS[year]
    types = {"user_id": pa.string(), "item_id": pa.string(), "rating": pa.float64(), "timestamp": pa.int64()}
    schema = pa.schema([(raw, types[name]) for raw, name in fields.items()])
    try:
        with _open(path) as stream:
            table = pajson.read_json(
                stream,
                parse_options=pajson.ParseOptions(
                    explicit_schema=schema, unexpected_field_behavior="ignore", newlines_in_values=False
                ),
            )
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # not strict JSON: parse each line, naming the line on an error
        table = _reviews_line_by_line(path, fields, schema)
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not readable as Amazon {year} reviews: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: record 1: no reviews in the file")
    return table.select(list(fields)).rename_columns(list(fields.values()))


def _reviews_line_by_line(path: Path, fields: dict[str, str], schema: pa.Schema) -> pa.Table:
    columns: dict[str, list] = {raw: [] for raw in fields}
    with _open(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if raw.strip():
                record = _parse_line(path, number, raw)
                for name in fields:
                    columns[name].append(record.get(name))
    try:
        return pa.table({name: pa.array(values, schema.field(name).type) for name, values in columns.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: a review field has an unexpected type: {exc}") from None


def read_meta(path: Path, year: str) -> tuple[pa.Table, dict[str, int]]:
    """Item text fields of a meta file (one item per line), and the lines dropped by reason."""
    id_field = META_ID[year]
    seen: set[str] = set()
    columns: dict[str, list] = {name: [] for name in ITEM_COLUMNS}
    lines = repeated = 0
    with _open(path) as stream:
        for number, raw in enumerate(stream, start=1):
            if not raw.strip():
                continue
            lines += 1
            record = _parse_line(path, number, raw)
            item = record.get(id_field)
            if not isinstance(item, str) or not item.strip():
                raise DataError(f"{path}: line {number}: field {id_field!r} (the item id) is missing or empty")
            item = item.strip()
            if item in seen:  # the 2018 meta files list some items twice
                repeated += 1
                continue
            seen.add(item)
            columns["item_id"].append(item)
            columns["title"].append(_text(record.get("title")))
            columns["description"].append(_text(record.get("description")))
            columns["categories"].append(_categories(record.get("categories", record.get("category"))))
            columns["brand"].append(_text(record.get("brand", record.get("store"))))
            columns["price"].append(_text(record.get("price")))
    if lines == 0:
        raise DataError(f"{path}: line 1: no items in the file")
    table = pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})
    return table, ({"item listed again, first kept": repeated} if repeated else {})


def _parse_line(path: Path, number: int, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: line {number}: not valid UTF-8") from None
    try:
        record = json.loads(text)
    except ValueError:
        try:  # the 2014 meta files are Python literals
            record = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise DataError(
                f"{path}: line {number}: neither JSON nor a Python literal ({type(exc).__name__}): {text[:120]!r}"
            ) from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: line {number}: expected an object (one item per line), found {type(record).__name__}")
    return record


def _text(value) -> str | None:
    """A field as plain text: lists joined, HTML entities decoded, blanks as None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None and str(v).strip())
    text = html.unescape(str(value)).strip()
    return text or None


def _categories(value) -> str | None:
    """2014: a list of category paths (lists); 2018/2023: one list. Distinct names, in order, comma-joined."""
    if not value:
        return None
    names = [name for path in value for name in (path if isinstance(path, (list, tuple)) else [path])]
    distinct = list(dict.fromkeys(html.unescape(str(name)).strip() for name in names if str(name).strip()))
    return ", ".join(distinct) or None
