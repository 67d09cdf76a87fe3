"""Paired significance of each leaderboard row against the strongest ID model and against its own backbone.

A row's per-user metric is read from the stored ranks of its runs (`ranks_test.parquet`, raylrec/eval/ranks.py),
averaged over those runs (seeds) user by user; two rows of one table share the split, so their users pair up.
Intervals are paired bootstrap intervals of the mean difference (raylrec/eval/compare.py), over all test users
and over the users whose target lies in the rarest equal-mass frequency buckets.
"""

from __future__ import annotations

import math

import pandas as pd

from raylrec.eval.compare import RAREST, compare_user_values, user_values
from raylrec.eval.ranks import ranks_file, read_ranks

METRIC = "ndcg@10"


def row_values(stage_dirs: list) -> pd.DataFrame | None:
    """Per-user NDCG@10 of one row, averaged over its runs, from their stored test ranks; None when a run has none
    (run directories from before ranks were stored: no interval rather than a wrong one)."""
    frames = []
    for stage_dir in stage_dirs:
        path = ranks_file(stage_dir, "test")
        if not path.exists():
            return None
        frames.append(read_ranks(path))
    return user_values(pd.concat(frames, ignore_index=True), METRIC) if frames else None


def significance_columns(
    frame: pd.DataFrame, values_by_row: dict[int, pd.DataFrame | None], num_buckets: int
) -> pd.DataFrame:
    """Columns `best_id` (the label of the table's strongest ID model), `delta_<metric>_vs_<ref>` (+ `_low`,
    `_high`) and the same prefixed `rare_` for the rarest buckets, for ref `best_id` and `backbone` (the row's own
    backbone stage), and `rare_users`; indexed like `frame`."""
    entries = []
    for _, part in frame.groupby("table", sort=False):
        if part["protocol"].iloc[0] != "full":
            continue
        ids = part[(part["role"] == "id_model") & part.index.map(lambda i: values_by_row.get(i) is not None)]
        best_id = ids["ndcg@10"].idxmax() if len(ids) else None
        for index, row in part.iterrows():
            entry = {"index": index, "rare_users": math.nan}
            backbone = None
            if row["backbone"]:
                matches = part[(part["model"] == row["backbone"]) & ~part["method"].str.contains(r"\(tuned")]
                backbone = matches.index[0] if len(matches) else None
            entry["best_id"] = part.loc[best_id, "method"] if best_id is not None else ""
            results = {}  # by reference row: a method's backbone is often the strongest ID model itself
            for ref, other in (("best_id", best_id), ("backbone", backbone)):
                mine, theirs = values_by_row.get(index), values_by_row.get(other) if other is not None else None
                if other is None or other == index or mine is None or theirs is None:
                    continue
                if other not in results:
                    results[other] = compare_user_values(mine, theirs, METRIC, num_buckets)
                result = results[other]
                for prefix, difference in (("", result.overall), ("rare_", result.rarest)):
                    entry[f"{prefix}delta_{METRIC}_vs_{ref}"] = difference.mean
                    entry[f"{prefix}delta_{METRIC}_vs_{ref}_low"] = difference.low
                    entry[f"{prefix}delta_{METRIC}_vs_{ref}_high"] = difference.high
                entry["rare_users"] = result.rarest.n
            entries.append(entry)
    columns = pd.DataFrame(entries)
    return columns.set_index("index") if len(columns) else columns


def interval_cell(row, prefix: str, ref: str) -> str:
    mean = row.get(f"{prefix}delta_{METRIC}_vs_{ref}", math.nan)
    if mean is None or pd.isna(mean):
        return "–"
    low, high = row[f"{prefix}delta_{METRIC}_vs_{ref}_low"], row[f"{prefix}delta_{METRIC}_vs_{ref}_high"]
    mark = " **↑**" if low > 0 else " **↓**" if high < 0 else ""
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{mark}"


def significance_table(part: pd.DataFrame) -> str | None:
    """Markdown: each row's NDCG@10 difference to the strongest ID model and to its own backbone, with intervals."""
    if (
        f"delta_{METRIC}_vs_best_id" not in part
        or part[[c for c in part.columns if c.startswith("delta_")]].isna().all().all()
    ):
        return None
    rare_users = part["rare_users"].dropna()
    rare = f"rarest {RAREST} buckets" + (f" ({int(rare_users.iloc[0])} users)" if len(rare_users) else "")
    columns = [
        "Method",
        "vs strongest ID model",
        "Δ NDCG@10 [95 % CI]",
        f"Δ NDCG@10, {rare}",
        "vs own backbone",
        "Δ NDCG@10 [95 % CI]",
        f"Δ NDCG@10, {rare}",
    ]
    lines = [
        f"### {part['dataset'].iloc[0]} (test split): paired differences",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for _, row in part.iterrows():
        cells = [
            row["method"],
            row["best_id"] or "–",
            interval_cell(row, "", "best_id"),
            interval_cell(row, "rare_", "best_id"),
            row["backbone_label"] or "–",
            interval_cell(row, "", "backbone"),
            interval_cell(row, "rare_", "backbone"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
