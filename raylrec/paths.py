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
        """`run_dir`: a path or a `file://` URI (see raylrec/storage.py)."""
        from raylrec.storage import local_path

        self.location = str(run_dir)
        self.root = local_path(run_dir)

    def data_dir(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def model_dir(self, model_name: str) -> Path:
        return self.root / "models" / model_name

    def embeddings_dir(self, key: str) -> Path:
        return self.root / "embeddings" / key

    def ray_storage(self) -> Path:
        return self.root / "ray"
