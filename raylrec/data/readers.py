"""Read interaction and item files of several formats into one canonical Arrow form.

Interactions: `user_id` (string), `item_id` (string), `rating` (float64, null when the file has none), `timestamp`
(int64, null when the file has none: file order is then time order) and `row` (int64: the record's 1-based line
number in the file, its row number for parquet; for error messages and deterministic tie-breaking).

Items: `item_id` (string), `title` (string), then the file's other fields as strings (empty ones null).

Formats: `recbole` (.inter/.item/.text atomic files), `movielens-100k` (u.data, u.item), `movielens-1m`
(ratings.dat, movies.dat), `csv`, `tsv`, `whitespace` (with a header line naming the columns, or headerless with
`fields=`), `parquet`, whose columns are chosen with a ColumnMapping / ItemColumnMapping, and `sasrec` (headerless
`user item` lines). Sequence files (raylrec.data.sequence_files): `p5` (user_sequence.txt, one user per line) and
`recbole-splits` (UniSRec's <stem>.train/valid/test.inter); for these `row` is the interaction's place in the file
order. Amazon dumps (raylrec.data.amazon): `amazon-2014`, `amazon-2018`, `amazon-2023`, reviews and meta files.
Item tables also as `json` (an object: id → title or id → fields; or a list of objects) and `jsonl`.
Bad input raises DataError naming file, line and field.

Rows a reader drops on purpose (e.g. an item listed twice in an Amazon meta file) are counted by reason in the
table's schema metadata (`dropped_rows`); the preparation report lists them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raylrec.errors import DataError

FORMATS = (
    "recbole",
    "movielens-100k",
    "movielens-1m",
    "csv",
    "tsv",
    "whitespace",
    "parquet",
    "sasrec",
    "p5",
    "recbole-splits",
    "amazon-2014",
    "amazon-2018",
    "amazon-2023",
    "json",
    "jsonl",
)
SEQUENCE_FORMATS = ("p5", "recbole-splits")  # interactions only: their items come from a separate table
ITEM_ONLY_FORMATS = ("json", "jsonl")
DROPPED_KEY = b"dropped_rows"  # schema metadata: JSON {reason: rows}
ROW_UNIT_KEY = b"row_unit"  # schema metadata: what the `row` column counts ("line", "interaction", ...)

INTERACTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("rating", pa.float64()),
        ("timestamp", pa.int64()),
        ("row", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ColumnMapping:
    """The file's column holding each interaction field; None: the file has no such column.

    Without an explicit mapping, the defaults are used and `rating`/`timestamp` are optional; an explicit mapping
    must match the file exactly.
    """

    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"


@dataclass(frozen=True)
class ItemColumnMapping:
    """The file's column holding the item id and title; the item file's other columns are kept as they are.

    Without an explicit mapping, `title` is optional.
    """

    item: str = "item_id"
    title: str | None = "title"


def read_interactions(
    path: str | Path,
    format: str = "auto",
    columns: ColumnMapping | None = None,
    delimiter: str | None = None,
    fields: list[str] | tuple[str, ...] | None = None,
) -> pa.Table:
    """Read an interactions file into the canonical table (see the module docstring).

    `fields`: the names of a headerless csv/tsv/whitespace file's fields, in order (the first line is then data).
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    if fmt in ITEM_ONLY_FORMATS:
        raise DataError(
            f"{path}: format {fmt!r} is for item tables; interactions need one of "
            f"{', '.join(f for f in FORMATS if f not in ITEM_ONLY_FORMATS)}"
        )
    mapping = columns or ColumnMapping()
    wanted = {"user": mapping.user, "item": mapping.item, "rating": mapping.rating, "timestamp": mapping.timestamp}
    if fmt in SEQUENCE_FORMATS or fmt.startswith("amazon-"):
        if columns or fields or delimiter:
            raise DataError(f"{path}: format {fmt!r} has fixed fields; columns=, fields= and delimiter= do not apply")
        records = _read_special_interactions(path, fmt)
    else:
        records = _read_records(
            path, fmt, _INTERACTION_LAYOUTS, delimiter, expected=[n for n in wanted.values() if n], fields=fields
        )
    if fmt == "recbole":
        records = _without_recbole_types(records)
    picked = _pick_columns(records, wanted, optional=set() if columns else {"rating", "timestamp"})

    n = records.table.num_rows
    rating = picked["rating"]
    timestamp = picked["timestamp"]
    return pa.Table.from_arrays(
        [
            _ids(records, picked["user"], mapping.user, "user"),
            _ids(records, picked["item"], mapping.item, "item"),
            pa.nulls(n, pa.float64()) if rating is None else _floats(records, rating, mapping.rating),
            pa.nulls(n, pa.int64()) if timestamp is None else _whole_numbers(records, timestamp, mapping.timestamp),
            pa.array(records.positions, pa.int64()),
        ],
        schema=INTERACTIONS_SCHEMA.with_metadata({ROW_UNIT_KEY: records.unit.encode()}),
    )


def dropped_rows(table: pa.Table) -> dict[str, int]:
    """The rows a reader dropped on purpose, by reason (see the module docstring)."""
    metadata = table.schema.metadata or {}
    return json.loads(metadata[DROPPED_KEY]) if DROPPED_KEY in metadata else {}


def row_unit(table: pa.Table) -> str:
    """What an interactions table's `row` column counts: "line" for most files (see the module docstring)."""
    return (table.schema.metadata or {}).get(ROW_UNIT_KEY, b"line").decode()


def sibling_files(path: Path, format: str = "auto") -> list[Path]:
    """The other files an interactions file of this format is read together with (for checksums and fingerprints)."""
    from raylrec.data.sequence_files import SPLIT_NAMES, split_stem

    if _resolve_format(path, format) != "recbole-splits":
        return []
    stem = split_stem(path)
    names = [f"{stem.name}.{split}.inter" for split in SPLIT_NAMES] + [
        f"{stem.name}.{m}" for m in ("item2index", "user2index")
    ]
    return [stem.with_name(name) for name in names if stem.with_name(name) != path and stem.with_name(name).is_file()]


def read_item_id_map(path: str | Path) -> pd.Series:
    """A JSON object mapping the interactions' raw item ids to the item table's ids (P5's item_id_to_int.json),
    as a Series indexed by the item table's id (as text)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        mapping = json.loads(_decode(path, "utf-8-sig"))
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(mapping, dict) or not mapping:
        raise DataError(f"{path}: expected a non-empty JSON object mapping raw item ids to the item table's ids")
    by_table_id = pd.Series(list(mapping), index=[str(v) for v in mapping.values()], dtype=object)
    repeated = by_table_id.index.duplicated()
    if repeated.any():
        raise DataError(
            f"{path}: item table id {by_table_id.index[repeated][0]!r} is the target of more than one raw item id"
        )
    return by_table_id


def read_items(
    path: str | Path,
    format: str = "auto",
    columns: ItemColumnMapping | None = None,
    delimiter: str | None = None,
    id_map: str | Path | None = None,
) -> pa.Table:
    """Read an item file: `item_id`, `title`, then its other fields as string columns (see the module docstring).

    `id_map`: a JSON file mapping the interactions' raw item ids to this file's ids (read_item_id_map); the items
    then carry the raw ids, and items the map does not name are dropped and counted.
    """
    path = Path(path)
    fmt = _resolve_format(path, format)
    if fmt in SEQUENCE_FORMATS or fmt == "sasrec":
        raise DataError(
            f"{path}: format {fmt!r} holds interactions only; give the item table's own format "
            f"(e.g. csv, json, jsonl, recbole)"
        )
    mapping = columns or ItemColumnMapping()
    wanted = {"item": mapping.item, "title": mapping.title}
    dropped: dict[str, int] = {}
    if fmt.startswith("amazon-"):
        from raylrec.data.amazon import read_meta

        table, dropped = read_meta(path, fmt.removeprefix("amazon-"))
        records = _Records(path, table, np.arange(1, table.num_rows + 1), "item")
    elif fmt in ITEM_ONLY_FORMATS:
        records = _read_json_items(path, fmt, mapping)
    else:
        records = _read_records(path, fmt, _ITEM_LAYOUTS, delimiter, expected=[n for n in wanted.values() if n])
    records = _ITEM_FIXUPS.get(fmt, lambda r: r)(records)
    picked = _pick_columns(records, wanted, optional=set() if columns else {"title"})

    item_ids = _ids(records, picked["item"], mapping.item, "item")
    duplicated = pd.Series(item_ids.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        first = pc.index(item_ids, item_ids[i]).as_py()
        records.fail(
            f"{records.at(i, mapping.item)}: item id {item_ids[i].as_py()!r} already appeared on "
            f"{records.unit} {records.positions[first]}; each item must be listed once"
        )

    title = picked["title"]
    names = ["item_id", "title"]
    arrays = [item_ids, pa.nulls(len(item_ids), pa.string()) if title is None else _text(title)]
    for name in records.table.column_names:
        if name in (mapping.item, mapping.title):
            continue
        if name in names:
            records.fail(f"column {name!r} would clash with the canonical {name!r} column; rename it in the file")
        names.append(name)
        arrays.append(_text(records.table[name]))
    table = pa.Table.from_arrays(arrays, names=names)
    if id_map is not None:
        table, unnamed = _with_raw_ids(table, read_item_id_map(id_map), Path(id_map), path)
        if unnamed:
            dropped[f"item not named in {Path(id_map).name}"] = unnamed
    return table.replace_schema_metadata({DROPPED_KEY: json.dumps(dropped).encode()}) if dropped else table


def _with_raw_ids(
    table: pa.Table, raw_by_table_id: pd.Series, map_path: Path, items_path: Path
) -> tuple[pa.Table, int]:
    """Items re-keyed by the raw ids the map gives their table ids; items the map does not name are left out."""
    table_ids = pd.Series(table["item_id"].to_numpy(zero_copy_only=False))
    raw = table_ids.map(raw_by_table_id)
    named = raw.notna().to_numpy()
    absent = raw_by_table_id.index[~raw_by_table_id.index.isin(table_ids)]
    if len(absent):
        raise DataError(
            f"{map_path}: maps raw item {raw_by_table_id[absent[0]]!r} to {absent[0]!r}, which "
            f"{items_path.name} does not list ({len(absent)} such ids)"
        )
    table = table.filter(pa.array(named))
    return table.set_column(0, "item_id", pa.array(raw[named].to_numpy(), pa.string())), int((~named).sum())


def _read_special_interactions(path: Path, fmt: str) -> _Records:
    """Interactions of the sequence formats and the Amazon dumps, as records the common checks then convert."""
    from raylrec.data import amazon, sequence_files

    if fmt == "p5":
        lines, numbers = _lines(_decode(path, "utf-8-sig"))
        if len(lines) == 0:
            raise DataError(f"{path}: line 1: the file is empty; expected lines of `user item item ...`")
        found = sequence_files.read_p5(path, lines, numbers)
        return _Records(path, found.table, found.rows, "interaction")
    if fmt == "recbole-splits":

        def read_split(file: Path) -> tuple[pd.DataFrame, np.ndarray]:
            records = _without_recbole_types(_read_delimited(file, _TextLayout("\t"), ["user_id", "item_id"]))
            return records.table.to_pandas(), records.positions

        found = sequence_files.read_recbole_splits(path, read_split)
        return _Records(path, found.table, found.rows, "interaction")
    table = amazon.read_reviews(path, fmt.removeprefix("amazon-"))
    return _Records(path, table, np.arange(1, table.num_rows + 1), "record")


def _read_json_items(path: Path, fmt: str, mapping: ItemColumnMapping) -> _Records:
    """`json`: an object id → title (or id → object of fields), or a list of objects; `jsonl`: an object a line."""
    text = _decode(path, "utf-8-sig")
    if fmt == "jsonl":
        lines, numbers = _lines(text)
        objects = []
        for line, number in zip(lines.to_pylist(), numbers):
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise DataError(f"{path}: line {number}: not valid JSON: {exc}") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}: line {number}: expected an object, found {type(value).__name__}")
            objects.append(value)
        positions, unit = numbers, "line"
    else:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        if isinstance(value, dict):
            objects = [
                {mapping.item: key, **(entry if isinstance(entry, dict) else {mapping.title or "title": entry})}
                for key, entry in value.items()
            ]
        elif isinstance(value, list) and all(isinstance(entry, dict) for entry in value):
            objects = value
        else:
            raise DataError(f"{path}: expected an object (item id → title or fields) or a list of objects")
        positions, unit = np.arange(1, len(objects) + 1), "entry"
    if not objects:
        raise DataError(f"{path}: {unit} 1: no items in the file")
    names = list(dict.fromkeys(key for entry in objects for key in entry))
    columns = {name: pa.array([_json_text(entry.get(name)) for entry in objects], pa.string()) for name in names}
    return _Records(path, pa.table(columns), np.asarray(positions), unit)


def _json_text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# --- reading files into string columns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Records:
    """A file's records as columns (strings for text formats), and where each record is in the file."""

    path: Path
    table: pa.Table
    positions: np.ndarray  # 1-based position of each record, counted in `unit`s
    unit: str  # "line"; "record" when quoted CSV values span lines; "row" for parquet
    header_line: int | None = None  # line of the header, for formats that have one
    field_numbers: dict[str, int] = field(default_factory=dict)  # headerless formats: 1-based field of each name

    def fail(self, message: str) -> NoReturn:
        raise DataError(f"{self.path}: {message}")

    def column_source(self) -> str:
        """Where the column names come from, for missing-column messages."""
        if self.header_line is not None:
            return f"the header on line {self.header_line} names"
        return "this format's fields are" if self.field_numbers else "the file's columns are"

    def at(self, index: int, column: str) -> str:
        """Where record `index`'s value of `column` is, in words a user can find in the file."""
        number = self.field_numbers.get(column)
        label = f"field {number} ({column})" if number else f"column {column!r}"
        return f"{self.unit} {self.positions[index]}, {label}"


@dataclass(frozen=True)
class _TextLayout:
    delimiter: str | None  # None: runs of whitespace
    encoding: str = "utf-8-sig"  # utf-8, dropping a byte-order mark
    fields: tuple[str, ...] | None = None  # names of a headerless format's fields; None: line 1 is a header


_ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_MOVIELENS_RATINGS = ("user_id", "item_id", "rating", "timestamp")

_HEADER_FORMATS = ("csv", "tsv", "whitespace")
_INTERACTION_LAYOUTS = {
    "recbole": _TextLayout("\t"),
    "sasrec": _TextLayout(None, fields=("user_id", "item_id")),
    "movielens-100k": _TextLayout("\t", "latin-1", _MOVIELENS_RATINGS),
    "movielens-1m": _TextLayout("::", "latin-1", _MOVIELENS_RATINGS),
    "tsv": _TextLayout("\t"),
    "whitespace": _TextLayout(None),
}
_ITEM_LAYOUTS = {
    "recbole": _TextLayout("\t"),
    "movielens-100k": _TextLayout(
        "|", "latin-1", ("item_id", "title", "release_date", "video_release_date", "imdb_url", *_ML100K_GENRES)
    ),
    "movielens-1m": _TextLayout("::", "latin-1", ("item_id", "title", "genres")),
    "tsv": _TextLayout("\t"),
    "whitespace": _TextLayout(None),
}

# Exact names first: u.item would otherwise look like a RecBole .item file.
_MOVIELENS_100K_NAMES = re.compile(r"u\.(data|item)|u[0-9ab]\.(base|test)")
# Names of formats that the suffix alone cannot tell.
_FORMAT_BY_NAME = (
    (re.compile(r"user_sequence\.txt"), "p5"),
    (re.compile(r".+\.(train|valid|test)\.inter"), "recbole-splits"),
    (re.compile(r"(reviews|meta)_.+\.json\.gz"), "amazon-2014"),  # 2018 meta files parse the same way
    (re.compile(r".+\.jsonl\.gz"), "amazon-2023"),
    (re.compile(r".+\.json\.gz"), "amazon-2018"),
)
_FORMAT_BY_SUFFIX = {
    ".inter": "recbole",
    ".item": "recbole",
    ".text": "recbole",
    ".json": "json",
    ".jsonl": "jsonl",
    ".dat": "movielens-1m",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "whitespace",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def _resolve_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise DataError(f"{path}: unknown format {fmt!r}; known formats: auto, {', '.join(FORMATS)}")
        return fmt
    if _MOVIELENS_100K_NAMES.fullmatch(path.name.lower()):
        return "movielens-100k"
    for pattern, named in _FORMAT_BY_NAME:
        if pattern.fullmatch(path.name):
            return named
    detected = _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if detected is None:
        raise DataError(
            f"{path}: cannot tell the format from the file name; pass format= one of {', '.join(FORMATS)} "
            f"(detected: u.data/u.item, {', '.join(_FORMAT_BY_SUFFIX)})"
        )
    return detected


def _read_records(
    path: Path,
    fmt: str,
    layouts: dict[str, _TextLayout],
    delimiter: str | None,
    expected: list[str],
    fields: list[str] | tuple[str, ...] | None = None,
) -> _Records:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if fields is not None and fmt not in _HEADER_FORMATS:
        raise DataError(
            f"{path}: fields= names the fields of a headerless {', '.join(_HEADER_FORMATS)} file; "
            f"format {fmt!r} has its own layout"
        )
    if fields is not None:
        fields = tuple(_header(path, list(fields), line=None))
    if fmt == "parquet":
        return _read_parquet(path)
    if fmt == "csv":
        return _read_csv(path, delimiter or ",", expected, fields)
    layout = layouts[fmt]
    if delimiter:
        layout = replace(layout, delimiter=delimiter)
    if fields is not None:
        layout = replace(layout, fields=fields)
    return _read_delimited(path, layout, expected)


def _read_delimited(path: Path, layout: _TextLayout, expected: list[str]) -> _Records:
    """Split an unquoted file into fields, vectorised: lines, then fields, checking every line's field count."""
    lines, numbers = _lines(_decode(path, layout.encoding))
    if layout.delimiter is None:
        lines = pc.utf8_trim_whitespace(lines)
    fields = _split(lines, layout.delimiter)

    if layout.fields is None:
        if len(lines) == 0:
            _fail_empty(path, expected)
        header_line = int(numbers[0])
        names = _header(path, fields[0].as_py(), header_line)
        fields, lines, numbers = fields[1:], lines[1:], numbers[1:]
        if len(lines) == 0:
            raise DataError(f"{path}: line {header_line + 1}: no data rows after the header on line {header_line}")
    else:
        header_line = None
        names = list(layout.fields)
        if len(lines) == 0:
            raise DataError(f"{path}: line 1: the file is empty; expected lines of {', '.join(names)}")

    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(counts != len(names))
    if wrong.size:
        i = int(wrong[0])
        separator = "whitespace" if layout.delimiter is None else repr(layout.delimiter)
        raise DataError(
            f"{path}: line {numbers[i]}: expected {len(names)} fields separated by {separator} "
            f"({', '.join(names)}), found {counts[i]}: {_excerpt(lines[i].as_py())}"
        )
    table = pa.Table.from_arrays([pc.list_element(fields, k).cast(pa.string()) for k in range(len(names))], names=names)
    field_numbers = {} if layout.fields is None else {name: k + 1 for k, name in enumerate(names)}
    return _Records(path, table, numbers, "line", header_line, field_numbers)


def _read_csv(path: Path, delimiter: str, expected: list[str], fields: tuple[str, ...] | None = None) -> _Records:
    """Read a quoted CSV file with pyarrow, every column as strings, and map records back to line numbers."""
    if len(delimiter) != 1:
        raise DataError(f"{path}: a csv delimiter must be one character, got {delimiter!r}; use format='tsv' instead")
    text = _decode(path, "utf-8-sig")
    lines, numbers = _lines(text)
    if len(lines) == 0:
        if fields:
            raise DataError(f"{path}: line 1: the file is empty; expected lines of {', '.join(fields)}")
        _fail_empty(path, expected)
    if fields:
        header_line, raw_names, names = None, list(fields), list(fields)
    else:
        header_line = int(numbers[0])
        raw_names = next(csv.reader([lines[0].as_py()], delimiter=delimiter))
        # An unnamed column is usually a pandas index written with to_csv: named by its place, like pandas does.
        raw_names = [name if name.strip() else f"unnamed_{k + 1}" for k, name in enumerate(raw_names)]
        names = _header(path, raw_names, header_line)

    invalid: list[pacsv.InvalidRow] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "error"

    try:
        table = pacsv.read_csv(
            io.BytesIO(text.encode("utf-8")),
            # Single-threaded so pyarrow can number an invalid row.
            read_options=pacsv.ReadOptions(use_threads=False, column_names=raw_names if fields else None),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid_row),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in raw_names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        if not invalid:
            raise DataError(f"{path}: not readable as CSV: {exc}") from None
        row = invalid[0]
        # pyarrow counts records (header included, blank lines not); they are lines unless a quoted value spans lines.
        index = (row.number or 0) - (0 if fields else 1)
        aligned = 0 <= index < len(lines) and lines[index].as_py() == row.text
        where = f"line {numbers[index]}" if aligned else f"record {row.number}"
        raise DataError(
            f"{path}: {where}: expected {row.expected_columns} fields separated by {delimiter!r} "
            f"({', '.join(names)}), found {row.actual_columns}: {_excerpt(row.text)}"
        ) from None
    if table.num_rows == 0:
        raise DataError(f"{path}: line {header_line + 1}: no data rows after the header on line {header_line}")

    table = table.rename_columns(names)
    skip = 0 if fields else 1
    if table.num_rows == len(numbers) - skip:
        positions, unit = numbers[skip:], "line"
    else:  # quoted values span lines: only the record count is known
        positions, unit = np.arange(1 + skip, table.num_rows + 1 + skip), "record"
    field_numbers = {name: k + 1 for k, name in enumerate(names)} if fields else {}
    return _Records(path, table, positions, unit, header_line, field_numbers)


def _read_parquet(path: Path) -> _Records:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: row 1: no data rows (columns: {', '.join(table.column_names)})")
    return _Records(path, table, np.arange(1, table.num_rows + 1), "row")


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad_byte = data[exc.start : exc.start + 1]
        raise DataError(
            f"{path}: line {line}: byte {bad_byte!r} is not valid {exc.encoding.removesuffix('-sig')}; "
            "save the file as UTF-8"
        ) from None


def _lines(text: str) -> tuple[pa.Array, np.ndarray]:
    """The file's non-blank lines and their 1-based line numbers."""
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    lines = pc.utf8_rtrim(lines, characters="\r")
    blank = pc.equal(pc.binary_length(lines), 0).to_numpy(zero_copy_only=False)
    return lines.filter(pa.array(~blank)), np.flatnonzero(~blank) + 1


def _split(lines: pa.Array, delimiter: str | None) -> pa.Array:
    if delimiter is None:
        return pc.split_pattern_regex(lines, r"\s+")
    return pc.split_pattern(lines, delimiter)


def _header(path: Path, raw_names: list[str], line: int | None) -> list[str]:
    """Checked column names: from the header on `line`, or given as fields= (line None)."""
    names = [name.strip() for name in raw_names]
    where = f"line {line}: header" if line is not None else "fields="
    for k, name in enumerate(names):
        if not name:
            raise DataError(f"{path}: {where} field {k + 1} is empty; every column needs a name")
        if name in names[:k]:
            raise DataError(f"{path}: {where}: column {name!r} appears twice")
    return names


def _fail_empty(path: Path, expected: list[str]) -> NoReturn:
    raise DataError(
        f"{path}: line 1: the file is empty; expected a header line naming the columns {', '.join(expected)}"
    )


def _excerpt(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --- format-specific fix-ups -------------------------------------------------------------------------------------


def _without_recbole_types(records: _Records) -> _Records:
    """Drop RecBole's type suffixes (`user_id:token` -> `user_id`)."""
    names = [name.split(":", 1)[0] for name in records.table.column_names]
    _header(records.path, names, records.header_line)
    return replace(records, table=records.table.rename_columns(names))


# RecBole's field names for its MovieLens item files, as the canonical ones.
_RECBOLE_ITEM_NAMES = {"movie_title": "title", "release_year": "year", "class": "genres"}


def _recbole_items(records: _Records) -> _Records:
    records = _without_recbole_types(records)
    names = [_RECBOLE_ITEM_NAMES.get(name, name) for name in records.table.column_names]
    _header(records.path, names, records.header_line)
    table = records.table.rename_columns(names)
    if "genres" in names:  # a token_seq: space-separated genres
        table = table.set_column(
            names.index("genres"), "genres", pc.replace_substring_regex(table["genres"], r"\s+", ", ")
        )
    return replace(records, table=table)


def _movielens_100k_items(records: _Records) -> _Records:
    """Fold u.item's 19 genre flags into one `genres` column; take the year from the release date."""
    table = records.table
    genres = []
    for genre in _ML100K_GENRES:
        flags = table[genre]
        not_flag = pc.invert(pc.is_in(flags, pa.array(["0", "1"])))
        if pc.any(not_flag).as_py():
            i = _first_true(not_flag)
            records.fail(f"{records.at(i, genre)}: a genre flag must be 0 or 1, found {flags[i].as_py()!r}")
        genres.append(pc.if_else(pc.equal(flags, "1"), genre, pa.scalar(None, pa.string())))
    year = _year(table["release_date"], r"(?P<year>\d{4})$")
    fixed = pa.table(
        {
            "item_id": table["item_id"],
            "title": table["title"],
            "genres": pc.binary_join_element_wise(*genres, ", ", null_handling="skip"),
            "year": year,
            "release_date": table["release_date"],
            "video_release_date": table["video_release_date"],
            "imdb_url": table["imdb_url"],
        }
    )
    return replace(records, table=fixed)


def _movielens_1m_items(records: _Records) -> _Records:
    """`A|B` genres as `A, B`; the year from the title's trailing `(1995)`."""
    table = records.table
    genres = pc.replace_substring(table["genres"], "|", ", ")
    year = _year(table["title"], r"\((?P<year>\d{4})\)\s*$")
    fixed = pa.table({"item_id": table["item_id"], "title": table["title"], "genres": genres, "year": year})
    return replace(records, table=fixed)


def _year(values: pa.ChunkedArray, pattern: str) -> pa.ChunkedArray:
    """The `year` group of `pattern` in each value; null where it does not match."""
    return pc.struct_field(pc.extract_regex(values, pattern), "year")


_ITEM_FIXUPS: dict[str, Callable[[_Records], _Records]] = {
    "recbole": _recbole_items,
    "movielens-100k": _movielens_100k_items,
    "movielens-1m": _movielens_1m_items,
}


# --- checking and converting columns -----------------------------------------------------------------------------

_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_INTEGER = r"^[+-]?\d+$"


def _pick_columns(
    records: _Records, wanted: dict[str, str | None], optional: set[str]
) -> dict[str, pa.ChunkedArray | None]:
    present = records.table.column_names
    missing = [
        f"{name!r} ({role})"
        for role, name in wanted.items()
        if name is not None and name not in present and role not in optional
    ]
    if missing:
        hint = "" if records.field_numbers else "; pass columns= to name the columns to use"
        if records.header_line is not None:
            hint += (
                f", or fields= (e.g. ['user_id', 'item_id']) if line {records.header_line} is data: "
                "a file without a header line"
            )
        records.fail(
            f"missing column {', '.join(missing)}: {records.column_source()} {', '.join(map(repr, present))}{hint}"
        )
    return {role: records.table[name] if name in present else None for role, name in wanted.items()}


def _ids(records: _Records, values: pa.ChunkedArray, column: str, kind: str) -> pa.Array:
    """Ids as trimmed strings (numbers in parquet become their decimal text); an empty id is an error."""
    ids = pc.utf8_trim_whitespace(values.cast(pa.string())).combine_chunks()
    empty = pc.fill_null(pc.equal(pc.binary_length(ids), 0), True)
    if pc.any(empty).as_py():
        records.fail(f"{records.at(_first_true(empty), column)}: the {kind} id is empty")
    return ids


def _floats(records: _Records, values: pa.ChunkedArray, column: str) -> pa.Array:
    """Finite float64 values; the first bad one is reported with its position and text."""
    if _is_text(values.type):
        text = pc.utf8_trim_whitespace(values)
        _fail_first(records, pc.invert(pc.match_substring_regex(text, _NUMBER)), values, column, "is not a number")
        floats = pc.cast(text, pa.float64())
    elif pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_decimal(values.type):
        floats = pc.cast(values, pa.float64())
    else:
        records.fail(f"column {column!r} has type {values.type}; expected numbers")
    _fail_first(records, pc.invert(pc.is_finite(floats)), values, column, "is not a finite number")
    return floats.combine_chunks()


def _whole_numbers(records: _Records, values: pa.ChunkedArray, column: str) -> pa.Array:
    """Timestamps as int64; timestamp-typed parquet columns become seconds since the epoch."""
    if pa.types.is_timestamp(values.type):
        values = pc.cast(pc.cast(values, pa.timestamp("s"), safe=False), pa.int64())
    if pa.types.is_integer(values.type):
        _fail_first(records, pc.is_null(values), values, column, "is missing")
        return pc.cast(values, pa.int64()).combine_chunks()
    # Integral text is cast exactly, not through float64 (which would round beyond 2**53).
    if _is_text(values.type):
        text = pc.utf8_trim_whitespace(values)
        if pc.all(pc.fill_null(pc.match_substring_regex(text, _INTEGER), False)).as_py():
            try:
                return pc.cast(text, pa.int64()).combine_chunks()
            except pa.ArrowInvalid:
                pass  # a value beyond int64: located and reported below
    floats = _floats(records, values, column)
    whole = pc.and_(pc.equal(pc.floor(floats), floats), pc.less(pc.abs(floats), 2.0**63))
    _fail_first(records, pc.invert(whole), values, column, "is not a whole number within the 64-bit range")
    return pc.cast(floats, pa.int64())


def _text(values: pa.ChunkedArray) -> pa.Array:
    """Any column as strings, with empty strings as nulls."""
    text = values.cast(pa.string()).combine_chunks()
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def _fail_first(records: _Records, bad: pa.ChunkedArray, values: pa.ChunkedArray, column: str, problem: str) -> None:
    """Report the first record where `bad` is true or null (a null value is always bad)."""
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        i = _first_true(bad)
        value = values[i].as_py()
        shown = "the value is missing" if value is None else f"{value!r} {problem}"
        records.fail(f"{records.at(i, column)}: {shown}")


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


def _is_text(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)
