"""The canonical prepared dataset on disk, and its in-memory view used by training and evaluation.

Files in a prepared-data directory:
  interactions.parquet  user, item, timestamp, rating, position (time order within the user)
  items.parquet         item (1..N), item_id (raw), title and other text fields
  users.parquet         user (0..U-1), user_id (raw)
  sequences.parquet     user, items (list, time order) — the leave-one-out split is positional:
                        the last item is the test target, the second last the validation target
  negatives.parquet     user, split, num_negatives, items (list): sampled-evaluation negatives,
                        drawn once with a seed and never re-drawn
  data_report.json      rows in/out of every step, drops by reason, counts, fingerprint
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from raylrec.errors import ArtifactError

Split = Literal["train", "valid", "test"]
PREPARED_FILES = (
    "interactions.parquet",
    "items.parquet",
    "users.parquet",
    "sequences.parquet",
    "negatives.parquet",
    "data_report.json",
)


@dataclass(frozen=True)
class CSR:
    """Variable-length rows: row u is indices[indptr[u]:indptr[u+1]]."""

    indptr: np.ndarray
    indices: np.ndarray

    def row(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)


def left_pad_tails(csr: CSR, rows: np.ndarray, width: int) -> np.ndarray:
    """The last `width` entries of each selected row, left-padded with 0, as a (len(rows), width) array."""
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, u in enumerate(rows):
        tail = csr.row(u)[-width:]
        if len(tail):
            out[i, width - len(tail) :] = tail
    return out


def check_readable(path: Path) -> None:
    """A parquet file whose footer reads, or a JSON file that parses; else an error naming the file."""
    try:
        if path.suffix == ".parquet":
            pq.read_metadata(path)
        else:
            json.loads(path.read_text())
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid and json's JSONDecodeError are ValueErrors
        raise ArtifactError(
            f"artifact {path} is unreadable ({type(err).__name__}: {err}); it was damaged after "
            f"`raylrec data prepare` wrote it: prepare again into a new run directory, or delete "
            f"{path.parent} to have it re-prepared"
        ) from None


class PreparedData:
    """Read-only view of a prepared dataset directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        missing = [name for name in PREPARED_FILES if not (self.root / name).exists()]
        if missing:
            raise ArtifactError(
                f"prepared data at {self.root} is missing {', '.join(missing)}; run `raylrec data prepare` first"
            )
        for name in PREPARED_FILES:
            check_readable(self.root / name)
        self.report = json.loads((self.root / "data_report.json").read_text())
        sequences = pq.read_table(self.root / "sequences.parquet").sort_by("user")
        items_column = sequences.column("items").combine_chunks()
        self.sequences = CSR(
            items_column.offsets.to_numpy().astype(np.int64), items_column.flatten().to_numpy().astype(np.int64)
        )
        self.num_users = sequences.num_rows
        self.num_items = int(self.report["counts"]["items"])
        if (self.sequences.lengths < 3).any():
            raise ArtifactError(f"{self.root}/sequences.parquet has users with fewer than 3 items")

    @property
    def fingerprint(self) -> str:
        return self.report["fingerprint"]

    def history(self, split: Split) -> CSR:
        """Items a user interacted with before the split's target (for `train`: the training part)."""
        drop = 1 if split == "test" else 2
        lengths = self.sequences.lengths - drop
        keep = np.concatenate([np.arange(s, s + n) for s, n in zip(self.sequences.indptr[:-1], lengths)])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        return CSR(indptr, self.sequences.indices[keep])

    def targets(self, split: Literal["valid", "test"]) -> np.ndarray:
        offset = 2 if split == "valid" else 1
        return self.sequences.indices[self.sequences.indptr[1:] - offset]

    def input_windows(self, split: Literal["valid", "test"], users: np.ndarray, max_len: int) -> np.ndarray:
        """Model inputs for predicting the split's target: the last `max_len` history items, left-padded."""
        return left_pad_tails(self._history_cache(split), users, max_len)

    def train_windows(self, max_len: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training samples cut from each user's training part, newest first: (inputs, targets), each (S, max_len).

        targets[:, t] is the next item after inputs[:, t], so every position of a window trains at once.
        Windows end every `stride` items (default max_len: no overlap). With a shorter stride a window
        trains only the targets that no earlier-ending window covers, so every training transition is
        learned exactly once per epoch while seeing at least max_len - stride items of context.
        Untrained target positions are 0 (ignored by the losses).
        """
        stride = stride or max_len
        if not 0 < stride <= max_len:
            raise ValueError(f"stride must be in 1..{max_len}, got {stride}")
        history = self._history_cache("train")
        inputs, targets = [], []
        for u in range(self.num_users):
            items = history.row(u)
            end = len(items)
            while end > 1:
                start = max(0, end - max_len - 1)
                chunk_targets = items[start + 1 : end].copy()
                next_end = end - stride
                if next_end > 1:  # targets before next_end belong to the next (earlier-ending) window
                    chunk_targets[: max(0, next_end - start - 1)] = 0
                row_inputs = np.zeros(max_len, dtype=np.int64)
                row_targets = np.zeros(max_len, dtype=np.int64)
                row_inputs[max_len - (end - 1 - start) :] = items[start : end - 1]
                row_targets[max_len - len(chunk_targets) :] = chunk_targets
                inputs.append(row_inputs)
                targets.append(row_targets)
                end = next_end
        return np.stack(inputs), np.stack(targets)

    def item_train_counts(self) -> np.ndarray:
        """(num_items + 1,) interaction counts in the training part (index 0 = padding, always 0)."""
        return np.bincount(self._history_cache("train").indices, minlength=self.num_items + 1)

    @cached_property
    def negatives(self) -> dict[tuple[str, int], np.ndarray]:
        """(split, num_negatives) → (num_users, num_negatives) stored negatives, rows in user order."""
        frame = pd.read_parquet(self.root / "negatives.parquet")
        out = {}
        for (split, count), group in frame.groupby(["split", "num_negatives"]):
            group = group.sort_values("user")
            out[(split, int(count))] = np.stack(group["items"].to_numpy()).astype(np.int64)
        return out

    def items_table(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "items.parquet")

    def _history_cache(self, split: Split) -> CSR:
        cache = self.__dict__.setdefault("_histories", {})
        if split not in cache:
            cache[split] = self.history(split)
        return cache[split]
