"""Per-user ranks of one model on one split, stored next to its metrics so that models can be compared user by
user (paired bootstrap, raylrec/eval/compare.py) without re-scoring them.

`ranks_<split>.parquet`: one row per evaluated user — `user`, `target` (item index), `frequency_bucket` of the
target (equal-mass buckets of training interactions, 0 = rarest), and one 0-based rank column per protocol
(`full`, `sampled_<n>`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raylrec.errors import ArtifactError

KEY_COLUMNS = ("user", "target", "frequency_bucket")


def ranks_file(stage_dir: Path, split: str) -> Path:
    return Path(stage_dir) / f"ranks_{split}.parquet"


def write_ranks(
    path: Path, users: np.ndarray, targets: np.ndarray, buckets: np.ndarray, ranks: dict[str, np.ndarray]
) -> None:
    frame = pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64),
            "target": np.asarray(targets, dtype=np.int64),
            "frequency_bucket": np.asarray(buckets, dtype=np.int64),
            **{name: np.asarray(r, dtype=np.int64) for name, r in ranks.items()},
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def read_ranks(path: Path) -> pd.DataFrame:
    """The stored ranks, sorted by user; a clear error when the file is missing or lacks a column."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"{path}: cannot read per-user ranks ({err})") from err
    missing = [c for c in (*KEY_COLUMNS, "full") if c not in frame.columns]
    if missing:
        raise ArtifactError(f"{path}: per-user ranks lack the column(s) {', '.join(missing)}")
    return frame.sort_values("user").reset_index(drop=True)
