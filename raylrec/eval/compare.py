"""Is model A better than model B on the same users? Paired bootstrap intervals of the difference of a per-user
metric, overall and per target-frequency bucket.

Both models are scored on the same split and candidates (the one evaluator), so each user contributes a pair
(a_u, b_u); resampling users with their pairs keeps the correlation between the two models, which makes the
interval of the mean difference far narrower — and honest — than comparing two independent intervals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from raylrec.data.prepared import PreparedData
from raylrec.errors import RaylrecError
from raylrec.eval.buckets import frequency_buckets
from raylrec.eval.metrics import per_user_metrics

RAREST = 2  # "the rarest buckets": the two equal-mass buckets of the least frequent target items, pooled


@dataclass(frozen=True)
class Difference:
    """Mean of a − b over n paired users, with its percentile bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if self.n == 0:
            return "–"
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Difference:
    """Bootstrap interval of mean(a − b), resampling the users (the pairs) with replacement."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise RaylrecError(f"paired comparison needs the same users: {a.shape} vs {b.shape} values")
    if len(a) == 0:
        return Difference(float("nan"), float("nan"), float("nan"), 0)
    difference = a - b
    if len(a) == 1 or np.all(difference == difference[0]):  # no spread: the interval is the point
        value = float(difference.mean())
        return Difference(value, value, value, len(a))
    result = stats.bootstrap(
        (difference,),
        np.mean,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return Difference(
        float(difference.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high), len(a)
    )


@dataclass(frozen=True)
class Comparison:
    """A − B on one metric: over all users, per frequency bucket (0 = rarest), and on the rarest buckets pooled."""

    metric: str
    overall: Difference
    buckets: dict[int, Difference]
    rarest: Difference

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "overall": self.overall.as_dict(),
            "rarest": self.rarest.as_dict(),
            "buckets": {str(b): d.as_dict() for b, d in self.buckets.items()},
        }


def compare_values(
    a: np.ndarray, b: np.ndarray, buckets: np.ndarray, metric: str, num_buckets: int, seed: int = 0
) -> Comparison:
    """Paired per-user values of two models and each user's target-frequency bucket → their Comparison."""
    buckets = np.asarray(buckets)
    per_bucket = {
        bucket: paired_bootstrap(a[buckets == bucket], b[buckets == bucket], seed=seed) for bucket in range(num_buckets)
    }
    rare = buckets < RAREST
    return Comparison(
        metric, paired_bootstrap(a, b, seed=seed), per_bucket, paired_bootstrap(a[rare], b[rare], seed=seed)
    )


def metric_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-user values of a metric such as `ndcg@10` from 0-based ranks."""
    k = int(metric.partition("@")[2] or 0)
    values = per_user_metrics(ranks, [k]) if k else {}
    if metric not in values:
        raise RaylrecError(f"unknown metric {metric!r}: use hr@K, ndcg@K or mrr@K")
    return values[metric]


def user_values(ranks: pd.DataFrame, metric: str = "ndcg@10", protocol: str = "full") -> pd.DataFrame:
    """Stored per-user ranks (raylrec/eval/ranks.py; several runs of one model may be stacked) → one `value` of the
    metric per user and target, averaged over the runs."""
    values = ranks.assign(value=metric_values(ranks[protocol].to_numpy(), metric))
    return values.groupby(["user", "target", "frequency_bucket"], as_index=False)["value"].mean()


def compare_user_values(
    a: pd.DataFrame, b: pd.DataFrame, metric: str = "ndcg@10", num_buckets: int = 10, seed: int = 0
) -> Comparison:
    """Per-user values of two models (`user_values`) on the same split → A − B. The users and targets must match:
    values from different splits or datasets are never compared."""
    merged = a.merge(b, on=["user", "target", "frequency_bucket"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(a) or len(merged) != len(b):
        raise RaylrecError(
            f"the two rank tables do not hold the same users and targets ({len(a)} and {len(b)} "
            f"users, {len(merged)} in common): compare models of the same split only"
        )
    return compare_values(
        merged["value_a"].to_numpy(),
        merged["value_b"].to_numpy(),
        merged["frequency_bucket"].to_numpy(),
        metric,
        num_buckets,
        seed,
    )


def compare_frames(
    a: pd.DataFrame,
    b: pd.DataFrame,
    metric: str = "ndcg@10",
    protocol: str = "full",
    num_buckets: int = 10,
    seed: int = 0,
) -> Comparison:
    """Two stored per-user rank tables of the same split (`read_ranks`) → A − B on `metric` of `protocol`."""
    return compare_user_values(
        user_values(a, metric, protocol), user_values(b, metric, protocol), metric, num_buckets, seed
    )


def compare_ranks(
    data: PreparedData,
    split: str,
    ranks_a: dict[str, np.ndarray],
    ranks_b: dict[str, np.ndarray],
    metric: str = "ndcg@10",
    num_buckets: int = 10,
    protocol: str = "full",
    users: np.ndarray | None = None,
    seed: int = 0,
) -> Comparison:
    """In-memory ranks of two models (`Evaluator.ranks` of the same users of `split`) → A − B, with the frequency
    buckets of each user's target computed from `data`'s training split."""
    users = np.arange(data.num_users) if users is None else np.asarray(users)
    buckets = frequency_buckets(data.item_train_counts(), num_buckets)[data.targets(split)[users]]
    return compare_values(
        metric_values(ranks_a[protocol], metric),
        metric_values(ranks_b[protocol], metric),
        buckets,
        metric,
        num_buckets,
        seed,
    )
