import math

import numpy as np
import pytest
import torch

from raylrec.eval.buckets import frequency_buckets, length_labels, warm_cold_labels
from raylrec.eval.metrics import mean_interval, mean_metrics, per_user_metrics, target_ranks


def test_ranks_are_pessimistic_on_ties():
    scores = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.7],  # target col 1: 0.9 and 0.7 ahead → rank 2
            [0.3, 0.3, 0.3, 0.3],  # all tied with the target → worst rank 3
            [0.2, 0.8, 0.8, 0.1],  # target col 2 ties with col 1 → rank 1
            [0.1, 0.2, 0.3, 0.4],  # target col 3 is the best → rank 0
        ]
    )
    ranks = target_ranks(scores, torch.tensor([1, 0, 2, 3]))
    assert ranks.tolist() == [2, 3, 1, 0]


def test_metric_values_by_hand():
    values = per_user_metrics(np.array([0, 1, 4, 25]), ks=[1, 5, 10])
    assert values["hr@1"].tolist() == [1, 0, 0, 0]
    assert values["hr@5"].tolist() == [1, 1, 1, 0]
    assert values["ndcg@5"].tolist() == pytest.approx([1.0, 1 / math.log2(3), 1 / math.log2(6), 0.0])
    assert values["mrr@10"].tolist() == pytest.approx([1.0, 0.5, 0.2, 0.0])
    summary = mean_metrics(np.array([0, 1, 4, 25]), ks=[5])
    assert summary["n"] == 4
    assert summary["hr@5"] == pytest.approx(0.75)
    assert summary["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4)


def test_warm_cold_split_by_training_count():
    counts = np.array([0, 50, 1, 30, 2, 10, 0, 5, 7, 3, 20])  # index 0 = padding; 10 items
    labels = warm_cold_labels(counts, fraction=0.3)
    assert set(np.flatnonzero(labels == "warm")) == {1, 3, 10}
    assert set(np.flatnonzero(labels == "cold")) == {2, 4, 6}
    assert labels[0] == "padding"
    assert (labels == "median").sum() == 4


def test_frequency_buckets_have_equal_mass():
    counts = np.array([0] + [1] * 50 + [50])  # 50 rare items hold half the mass, one item the other half
    buckets = frequency_buckets(counts, num_buckets=2)
    assert buckets[0] == -1
    assert (buckets[1:51] == 0).all()
    assert buckets[51] == 1


def test_length_labels():
    labels = length_labels(np.array([3, 20, 49, 50, 250]), edges=[20, 50, 100])
    assert labels.tolist() == ["<20", "20-49", "20-49", "50-99", ">=100"]


def test_mean_interval_brackets_the_mean_with_the_normal_width():
    """943 hits at rate 0.13 (one run's HR@10 on ML-100k): the bootstrap interval of the mean is close to
    mean ± 1.96·sd/√n, and fixed by its seed."""
    values = np.zeros(943)
    values[:123] = 1.0
    low, high = mean_interval(values)
    half_width = 1.96 * values.std() / math.sqrt(len(values))
    assert low < values.mean() < high
    assert abs((high - low) / 2 - half_width) < 0.1 * half_width
    assert mean_interval(values) == (low, high)


def test_mean_interval_of_identical_values_is_that_value():
    assert mean_interval(np.full(50, 0.25)) == pytest.approx((0.25, 0.25))


def test_nan_and_inf_scores_rank_worst_never_best():
    """A diverged model's NaN (or +inf) target score is the last rank, never rank -1 / HR = 1 / NDCG = inf; a NaN
    on another candidate counts ahead of the target; -inf (the evaluator's mask) stays behind."""
    nan, inf = float("nan"), float("inf")
    scores = torch.tensor(
        [
            [nan, 0.5, 0.1, 0.7],  # NaN target → last (3)
            [nan, nan, nan, nan],  # all NaN → last
            [0.2, inf, 0.8, 0.1],  # +inf target → last
            [nan, 0.2, 0.3, -inf],  # target col 2: the NaN counts ahead, the masked -inf does not → 1
            [-inf, 0.2, -inf, -inf],  # -inf target ties every masked item → last
        ]
    )
    ranks = target_ranks(scores, torch.tensor([0, 2, 1, 2, 0]))
    assert ranks.tolist() == [3, 3, 3, 1, 3]
    metrics = mean_metrics(ranks.numpy(), ks=[1, 2])
    assert all(math.isfinite(v) and 0 <= v <= 1 for k, v in metrics.items() if k != "n")
    assert metrics["hr@1"] == 0.0 and metrics["hr@2"] == pytest.approx(0.2)
