"""Interaction files that hold whole sequences rather than one interaction per line.

- `p5`: P5 / OpenP5 `user_sequence.txt`, one user per line, `user item item ...` in time order (no timestamps,
  no ratings) — the format of the P5 data release (Geng et al., "Recommendation as Language Processing", RecSys'22).
- `recbole-splits`: the RecBole sequential split files of UniSRec's processed data (Hou et al., "Towards Universal
  Sequence Representation Learning for Recommender Systems", KDD'22): `<stem>.{train,valid,test}.inter` with
  `user_id item_id_list item_id`, where each row is a history and its next item; the training file holds every
  prefix of a user's training part, the validation and test files the user's last two targets. Item (and user) ids
  are indices, mapped back to raw ids with `<stem>.item2index` / `<stem>.user2index` when they exist.

Both return the interactions as string columns `user_id`, `item_id` in time order, numbered by their place in the
file order (`row`), which breaks the time ties since these files have no timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raylrec.errors import DataError

SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class SequenceRecords:
    """Interactions read from a sequence file: string columns, each row's number in file order."""

    table: pa.Table  # user_id, item_id (strings)
    rows: np.ndarray  # 1-based, the interaction's place in the file order


def read_p5(path: Path, lines: pa.Array, numbers: np.ndarray) -> SequenceRecords:
    """`user item item ...` lines (already decoded and non-blank) → one row per item, in line order."""
    fields = pc.split_pattern_regex(pc.utf8_trim_whitespace(lines), r"\s+")
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False)
    lonely = np.flatnonzero(counts < 2)
    if lonely.size:
        i = int(lonely[0])
        raise DataError(
            f"{path}: line {numbers[i]}: user {fields[i][0].as_py()!r} has no items; expected "
            "`user item item ...` (P5 user_sequence.txt: one user per line, items in time order)"
        )
    users = pc.list_element(fields, 0)
    items = pc.list_slice(fields, 1).flatten()
    owner = pc.list_parent_indices(pc.list_slice(fields, 1)).to_numpy()
    table = pa.table({"user_id": users.take(pa.array(owner)), "item_id": items})
    return SequenceRecords(table, np.arange(1, table.num_rows + 1))


def split_stem(path: Path) -> Path:
    """`Scientific.train.inter` (or .valid/.test, or the bare stem) → the stem path `.../Scientific`."""
    name = path.name
    for split in SPLIT_NAMES:
        if name.endswith(f".{split}.inter"):
            return path.with_name(name[: -len(f".{split}.inter")])
    return path


def read_recbole_splits(path: Path, read_split) -> SequenceRecords:
    """Rebuild each user's full sequence from the three split files.

    `read_split(path) -> (frame, line_numbers)` reads one RecBole atomic file into a string DataFrame with its
    type suffixes removed. A user's sequence is the history of their earliest row plus the targets of every row
    in order; every row's (possibly truncated) history is then checked against that sequence, so a file whose
    rows do not chain up is an error naming the line, never silently re-ordered.
    """
    stem = split_stem(path)
    frames = []
    for split in SPLIT_NAMES:
        file = stem.with_name(f"{stem.name}.{split}.inter")
        if not file.is_file():
            raise DataError(
                f"{file}: no such file; the RecBole split format needs {stem.name}.train.inter, "
                f"{stem.name}.valid.inter and {stem.name}.test.inter side by side"
            )
        frame, lines = read_split(file)
        missing = [c for c in ("user_id", "item_id_list", "item_id") if c not in frame.columns]
        if missing:
            raise DataError(
                f"{file}: line 1: missing column {', '.join(missing)}; the header names "
                f"{', '.join(frame.columns)} (expected user_id, item_id_list, item_id)"
            )
        frames.append((file, frame, lines))
    by_user: dict[str, list[list[tuple]]] = {}  # user → rows of each split: (history, target, file, line)
    for rank, (file, frame, lines) in enumerate(frames):
        for user, history, target, line in zip(
            frame["user_id"], frame["item_id_list"].str.split(), frame["item_id"], lines
        ):
            by_user.setdefault(user, [[], [], []])[rank].append((history, target, file, int(line)))

    users, items = [], []
    for user, split_rows in by_user.items():
        rows = ordered_rows(split_rows)
        sequence = list(rows[0][0]) + [target for _, target, _, _ in rows]
        first_target = len(sequence) - len(rows)
        for position, (history, _, file, line) in enumerate(rows, start=first_target):
            if position < len(history) or sequence[position - len(history) : position] != history:
                raise DataError(
                    f"{file}: line {line}: the history of user {user!r} does not continue the "
                    "user's earlier rows; each user's rows must be the prefixes of one sequence"
                )
        users += [user] * len(sequence)
        items += sequence
    table = pa.table({"user_id": pa.array(users, pa.string()), "item_id": pa.array(items, pa.string())})
    table = _to_raw_ids(table, stem, "item_id", "item2index")
    table = _to_raw_ids(table, stem, "user_id", "user2index")
    return SequenceRecords(table, np.arange(1, table.num_rows + 1))


def ordered_rows(split_rows: list[list[tuple]]) -> list[tuple]:
    """One user's rows from the earliest target to the latest: training rows by history length, rows of equal
    (truncated) length in the order the file lists the others (RecBole writes each user's prefixes longest first),
    then validation, then test."""
    train, valid, test = split_rows
    if len(train) > 1 and len(train[0][0]) > len(train[-1][0]):
        train = train[::-1]
    return sorted(train, key=lambda row: len(row[0])) + valid + test


def _to_raw_ids(table: pa.Table, stem: Path, column: str, suffix: str) -> pa.Table:
    """Replace index ids by the raw ids of `<stem>.<suffix>` (`raw<TAB>index` lines), when that file exists."""
    mapping_file = stem.with_name(f"{stem.name}.{suffix}")
    if not mapping_file.is_file():
        return table
    mapping = pd.read_csv(
        mapping_file, sep="\t", header=None, names=["raw", "index"], dtype=str, keep_default_na=False, quoting=3
    )
    if mapping["index"].duplicated().any():
        index = mapping.loc[mapping["index"].duplicated(), "index"].iloc[0]
        raise DataError(f"{mapping_file}: index {index!r} is listed twice")
    raw = pd.Series(mapping["raw"].to_numpy(), index=mapping["index"].to_numpy())
    values = pd.Series(table[column].to_numpy(zero_copy_only=False))
    mapped = values.map(raw)
    if mapped.isna().any():
        missing = values[mapped.isna()].iloc[0]
        raise DataError(f"{mapping_file}: has no raw id for {column} index {missing!r} used in the split files")
    return table.set_column(table.column_names.index(column), column, pa.array(mapped.to_numpy(), pa.string()))
