"""Paired comparisons of two models' per-user ranks: the bootstrap interval, the frequency buckets, and the
stored rank tables they are read from."""

import numpy as np
import pandas as pd
import pytest

from raylrec.errors import ArtifactError, RaylrecError
from raylrec.eval.compare import compare_frames, compare_values, paired_bootstrap
from raylrec.eval.ranks import read_ranks, write_ranks


def test_paired_interval_is_narrower_than_the_spread_of_either_model():
    rng = np.random.default_rng(0)
    shared = rng.random(2000)  # per-user difficulty both models see
    a, b = shared + 0.02, shared + rng.normal(0, 0.01, 2000)
    difference = paired_bootstrap(a, b)
    assert difference.n == 2000 and difference.mean == pytest.approx(0.02, abs=1e-3)
    assert difference.low < 0.02 < difference.high and difference.high - difference.low < 0.002
    assert difference.significant


def test_identical_models_differ_by_exactly_zero():
    values = np.random.default_rng(1).random(100)
    difference = paired_bootstrap(values, values.copy())
    assert (difference.mean, difference.low, difference.high) == (0.0, 0.0, 0.0)
    assert not difference.significant


def test_no_users_gives_an_empty_difference_and_mismatched_pairs_fail():
    assert paired_bootstrap(np.zeros(0), np.zeros(0)).n == 0
    with pytest.raises(RaylrecError, match="same users"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_buckets_and_the_rarest_pool_hold_their_own_users():
    buckets = np.repeat(np.arange(10), 10)  # 10 users per bucket
    a = np.where(buckets < 2, 1.0, 0.0)  # A wins only on the two rarest buckets
    comparison = compare_values(a, np.zeros(100), buckets, "ndcg@10", num_buckets=10)
    assert comparison.rarest.n == 20 and comparison.rarest.mean == 1.0
    assert comparison.buckets[0].mean == 1.0 and comparison.buckets[9].mean == 0.0
    assert comparison.overall.mean == pytest.approx(0.2)


def test_stored_ranks_round_trip_and_compare(tmp_path):
    users, targets, buckets = np.arange(4), np.array([5, 6, 7, 8]), np.array([0, 1, 2, 9])
    write_ranks(tmp_path / "a.parquet", users, targets, buckets, {"full": np.array([0, 0, 50, 50])})
    write_ranks(
        tmp_path / "b.parquet", users[::-1], targets[::-1], buckets[::-1], {"full": np.array([50, 50, 50, 0])}
    )  # user order differs on disk: pairs follow the user id
    a, b = read_ranks(tmp_path / "a.parquet"), read_ranks(tmp_path / "b.parquet")
    comparison = compare_frames(a, b, "hr@10", num_buckets=10)
    # users 0..3: A hits 0 and 1, B hits 0 (its rank 0 is the last row written, user 0)
    assert comparison.overall.mean == pytest.approx((0 + 1 + 0 - 0) / 4)
    assert comparison.rarest.n == 2


def test_rank_tables_of_different_splits_are_not_compared(tmp_path):
    write_ranks(tmp_path / "a.parquet", np.arange(3), np.array([1, 2, 3]), np.zeros(3), {"full": np.zeros(3)})
    write_ranks(tmp_path / "b.parquet", np.arange(3), np.array([1, 2, 4]), np.zeros(3), {"full": np.zeros(3)})
    with pytest.raises(RaylrecError, match="same users and targets"):
        compare_frames(read_ranks(tmp_path / "a.parquet"), read_ranks(tmp_path / "b.parquet"))


def test_a_rank_table_without_its_rank_column_is_a_clear_error(tmp_path):
    pd.DataFrame({"user": [0], "target": [1], "frequency_bucket": [0]}).to_parquet(tmp_path / "r.parquet")
    with pytest.raises(ArtifactError, match="full"):
        read_ranks(tmp_path / "r.parquet")
