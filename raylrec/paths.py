"""Where raylrec keeps downloads and caches (run directories: raylrec/storage.py `RunLayout`)."""

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
