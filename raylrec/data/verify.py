"""`raylrec data verify NAME`: the raw dataset's counts against the statistics published for it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc

from raylrec.data.fetch import fetch_dataset
from raylrec.data.readers import read_interactions
from raylrec.data.sources import PUBLISHED
from raylrec.errors import DataError


@dataclass(frozen=True)
class CountCheck:
    what: str  # users, items, interactions
    published: int
    found: int

    @property
    def matches(self) -> bool:
        return self.published == self.found


def verify_dataset(
    name: str,
    cache_root: str | os.PathLike | None = None,
    source_dir: str | os.PathLike | None = None,
    allow_unverified: bool = False,
) -> tuple[str, list[CountCheck]]:
    """Fetch `name`, read its interactions as they are (no preparation) and compare the distinct users, distinct
    items and interactions with the published statistics; returns (where they were published, the checks)."""
    if name not in PUBLISHED:
        raise DataError(f"no published statistics for {name!r}; known: {', '.join(sorted(PUBLISHED))}")
    raw = fetch_dataset(name, cache_root, allow_unverified=allow_unverified, source_dir=source_dir)
    table = read_interactions(raw.interactions_path, raw.format, raw.columns)
    published = PUBLISHED[name]
    checks = [
        CountCheck("users", published.users, pc.count_distinct(table["user_id"]).as_py()),
        CountCheck("items", published.items, pc.count_distinct(table["item_id"]).as_py()),
        CountCheck("interactions", published.interactions, table.num_rows),
    ]
    return f"{published.reference}; read from {Path(raw.interactions_path).parent} ({raw.source})", checks
