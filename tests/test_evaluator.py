import numpy as np
import pytest
import torch

from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import EvalConfig, Evaluator


def index_scorer(num_items: int):
    """Scores every item by its index (higher index ranks first); padding column included."""

    def score(users: np.ndarray) -> torch.Tensor:
        return torch.arange(num_items + 1, dtype=torch.float32).repeat(len(users), 1)

    return score


@pytest.mark.parametrize("exclude_history", [True, False])
def test_full_and_sampled_ranks_match_a_naive_loop(prepared_dir, exclude_history):
    data = PreparedData(prepared_dir)
    config = EvalConfig(exclude_history=exclude_history, num_negatives=[5, 10], batch_size=7)
    evaluator = Evaluator(data, "test", config)
    ranks = evaluator.ranks(index_scorer(data.num_items))
    history = data.history("test")
    for user, target in enumerate(data.targets("test")):
        others = set(range(1, data.num_items + 1)) - {int(target)}
        if exclude_history:
            others -= set(history.row(user).tolist())
        assert ranks["full"][user] == sum(item > target for item in others)
        negatives = data.negatives[("test", 5)][user]
        assert ranks["sampled_5"][user] == int((negatives > target).sum())


def test_perfect_and_constant_scorers(prepared_dir):
    data = PreparedData(prepared_dir)
    evaluator = Evaluator(data, "valid", EvalConfig(num_negatives=[5]))
    targets = torch.from_numpy(data.targets("valid"))

    def perfect(users):
        scores = torch.zeros(len(users), data.num_items + 1)
        scores[torch.arange(len(users)), targets[users]] = 1.0
        return scores

    summary = evaluator.evaluate(perfect)
    assert summary["full"]["hr@1"] == 1.0 and summary["full"]["ndcg@10"] == 1.0
    assert summary["sampled_5"]["hr@1"] == 1.0
    constant = evaluator.evaluate(lambda users: torch.zeros(len(users), data.num_items + 1))
    assert constant["sampled_5"]["hr@5"] == 0.0  # all six candidates tie: the target is ranked last
    assert constant["full"]["hr@1"] == 0.0


def test_buckets_partition_the_users(prepared_dir):
    data = PreparedData(prepared_dir)
    summary = Evaluator(data, "test", EvalConfig(num_negatives=[5], length_edges=[5, 10])).evaluate(
        index_scorer(data.num_items)
    )
    for grouping in ("warm_cold", "frequency", "history_length"):
        buckets = summary["buckets"][grouping]
        assert sum(b["n"] for b in buckets.values()) == data.num_users
        weighted = sum(b["hr@10"] * b["n"] for b in buckets.values() if b["n"])
        assert weighted / data.num_users == pytest.approx(summary["full"]["hr@10"])
    assert list(summary["buckets"]["warm_cold"]) == ["warm", "median", "cold"]
