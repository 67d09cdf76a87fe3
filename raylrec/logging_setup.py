"""raylrec's log lines: one format and level, in the driver and in the Ray tasks it starts."""

from __future__ import annotations

import logging


def configure_logging(level: int) -> None:
    """Log raylrec's lines at `level`, with time and logger name."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("raylrec").setLevel(level)
