"""Rank-based top-K metrics, vectorised over users.

Ranks are 0-based and pessimistic on ties: every other candidate with exactly the target's score is
counted ahead of the target, so a model that gives all items the same score gets the worst rank,
never a lucky one. Non-finite scores are pessimistic too: a NaN or +inf target score (a diverged model)
ranks last, and a NaN on another candidate counts ahead of the target, so NaN never reads as a hit.
(-inf is the evaluator's "not a candidate" mark and stays behind every finite score.)
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def target_ranks(scores: torch.Tensor, target_column: torch.Tensor) -> torch.Tensor:
    """(B, C) scores and (B,) column of each row's target → (B,) 0-based pessimistic ranks."""
    target_scores = scores.gather(1, target_column.unsqueeze(1))
    others = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target_column.unsqueeze(1), False)
    ahead = ((scores >= target_scores) | scores.isnan()) & others
    ranks = ahead.sum(1)
    diverged = target_scores.squeeze(1).isnan() | target_scores.squeeze(1).isposinf()
    return torch.where(diverged, torch.full_like(ranks, scores.size(1) - 1), ranks)


def per_user_metrics(ranks: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """HR@K, NDCG@K and MRR@K of each user (one relevant item per user)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    values: dict[str, np.ndarray] = {}
    for k in ks:
        hit = ranks < k
        values[f"hr@{k}"] = hit.astype(np.float64)
        values[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
        values[f"mrr@{k}"] = np.where(hit, 1.0 / (ranks + 1.0), 0.0)
    return values


def mean_metrics(ranks: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Metrics averaged over users, plus the user count `n` (0 users → metrics are NaN-free zeros omitted)."""
    summary: dict[str, float] = {"n": int(len(ranks))}
    if len(ranks):
        summary.update({name: float(v.mean()) for name, v in per_user_metrics(ranks, ks).items()})
    return summary


def mean_interval(
    values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a per-user metric's mean: how far the mean could move if another
    sample of users of the same size were evaluated."""
    result = stats.bootstrap(
        (np.asarray(values, dtype=np.float64),),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)
