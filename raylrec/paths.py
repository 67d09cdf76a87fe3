"""Where raylrec keeps downloads and caches, and how a run directory is laid out."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "RAYLREC_CACHE_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache root: explicit override > $RAYLREC_CACHE_DIR > $XDG_CACHE_HOME/raylrec > ~/.cache/raylrec."""
    if override:
        root = Path(override)
    elif os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "raylrec"
    return root.expanduser().resolve()


class RunLayout:
    """Named artifact locations under one run directory, so later stages find earlier outputs by name."""

    def __init__(self, run_dir: str | os.PathLike):
        """`run_dir`: a path or a URI (`file://`, `s3://`, …; see raylrec/storage.py)."""
        from raylrec.storage import RunStore

        self.location = str(run_dir)
        self.store = RunStore(run_dir)
        self.root = self.store.root

    def data_dir(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def model_dir(self, model_name: str) -> Path:
        return self.root / "models" / model_name

    def embeddings_dir(self, key: str) -> Path:
        return self.root / "embeddings" / key
