"""Groupings of users for per-bucket results: target-item popularity and user history length."""

from __future__ import annotations

import numpy as np


def warm_cold_labels(item_counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per item: 'warm' (top `fraction` of items by training count), 'cold' (bottom `fraction`), else 'median'.

    Items are ordered by count with item index breaking ties, so the split is deterministic. Index 0
    (padding) is excluded from the ranking.
    """
    num_items = len(item_counts) - 1
    order = np.lexsort((np.arange(1, num_items + 1), -item_counts[1:])) + 1  # most popular first
    cut = int(round(fraction * num_items))
    labels = np.full(num_items + 1, "median", dtype=object)
    labels[order[:cut]] = "warm"
    labels[order[num_items - cut :]] = "cold"
    labels[0] = "padding"
    return labels


def frequency_buckets(item_counts: np.ndarray, num_buckets: int) -> np.ndarray:
    """Per item: bucket 0..B-1 such that each bucket holds about the same number of training interactions.

    Bucket 0 holds the rarest items, B-1 the most popular (as PAD). Index 0 (padding) gets -1.
    """
    counts = item_counts[1:].astype(np.float64)
    order = np.lexsort((np.arange(len(counts)), counts))  # rarest first
    mass_before = np.cumsum(counts[order]) - counts[order]
    total = counts.sum()
    bucket_sorted = np.minimum(num_buckets - 1, (num_buckets * mass_before / max(total, 1.0)).astype(np.int64))
    buckets = np.empty(len(counts), dtype=np.int64)
    buckets[order] = bucket_sorted
    return np.concatenate([[-1], buckets])


WARM_COLD_ORDER = ("warm", "median", "cold")


def length_bucket_names(edges: list[int]) -> list[str]:
    return [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f">={edges[-1]}"]


def length_labels(history_lengths: np.ndarray, edges: list[int]) -> np.ndarray:
    """Per user: a label like '<20', '20-49', '>=200' for the number of history items before the target."""
    index = np.searchsorted(np.asarray(edges), history_lengths, side="right")
    return np.asarray(length_bucket_names(edges), dtype=object)[index]
