"""`raylrec leaderboard RUN_DIR...`: every evaluated model's metrics JSONs → Markdown and CSV tables and PNG plots."""

from raylrec.leaderboard.core import build_leaderboard, collect_records, leaderboard_frame, markdown_table

__all__ = ["build_leaderboard", "collect_records", "leaderboard_frame", "markdown_table"]
