"""What each of phase 3's experts contributes: its ranking alone, the spread of its logits, and the gate it gets.

Written with the stage's metrics (`expert_diagnostics.json`), for the validation and test splits:
- each expert alone, ranked by the shared evaluator (full ranking, history masked): HR@10, NDCG@10, and NDCG@10
  of the users whose target item is in the rarest two frequency buckets (equal training-interaction mass);
- each expert's logit spread over the items (per user state, then averaged over the split's users): standard
  deviation and max − min of its raw logits o_e — an expert with a wide range outweighs a small gate;
- the mean gate weight of each expert per frequency bucket of the gate (over the bucket's items and the users).
"""

from __future__ import annotations

import numpy as np
import torch

from raylrec.data.prepared import PreparedData
from raylrec.eval.buckets import frequency_buckets
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.eval.metrics import mean_metrics
from raylrec.methods.pad.mixture import ExpertMixture
from raylrec.methods.pad.phase import with_padding_masked
from raylrec.methods.pad.towers import expert_scores

RAREST_BUCKETS = 2  # "tail" = the users whose target is in the rarest two of the evaluator's frequency buckets


def tail_users(data: PreparedData, split: str, eval_config: EvalConfig) -> np.ndarray:
    """Boolean per user: the split's target item lies in the rarest two frequency buckets."""
    buckets = frequency_buckets(data.item_train_counts(), eval_config.frequency_buckets)
    return buckets[data.targets(split)] < RAREST_BUCKETS


def ranking_summary(ranks: np.ndarray, tail: np.ndarray) -> dict:
    overall, rare = mean_metrics(ranks, [10]), mean_metrics(ranks[tail], [10])
    return {
        "hr@10": overall["hr@10"],
        "ndcg@10": overall["ndcg@10"],
        "rarest_two_ndcg@10": rare.get("ndcg@10", 0.0),
        "rarest_two_n": rare["n"],
    }


@torch.no_grad()
def logit_spread_and_gates(
    core: ExpertMixture, data: PreparedData, split: str, max_len: int, batch_size: int = 256
) -> tuple[dict, dict]:
    """Per expert, the mean over the split's users of the std and max − min of its raw logits over the items;
    and the mean gate weight per (gate bucket, expert) over the users and the bucket's items."""
    names = list(core.experts)
    std, spread = np.zeros(len(names)), np.zeros(len(names))
    gate_sums = None
    users = np.arange(data.num_users)
    tables = core.item_tables()
    items = torch.arange(core.num_items + 1)
    for start in range(0, len(users), batch_size):
        window = torch.from_numpy(data.input_windows(split, users[start : start + batch_size], max_len))
        states = core.states(window, None)
        logits = core.expert_logits(states, tables)[:, 1:]  # (U, items, experts), padding left out
        std += logits.std(1).sum(0).numpy()
        spread += (logits.amax(1) - logits.amin(1)).sum(0).numpy()
        if core.gate is not None:
            weights = core.gate(items, tables, states).expand(len(window), -1, -1)[:, 1:]
            batch_sums = weights.sum(0)  # (items, experts)
            gate_sums = batch_sums if gate_sums is None else gate_sums + batch_sums
    spread_by_expert = {
        name: {
            "logit_std": round(float(std[e] / len(users)), 4),
            "logit_range": round(float(spread[e] / len(users)), 4),
        }
        for e, name in enumerate(names)
    }
    gates = {}
    if gate_sums is not None:
        buckets = core.gate.item_buckets[1:]
        for bucket in buckets.unique().tolist():
            in_bucket = buckets == bucket
            mean = gate_sums[in_bucket].sum(0) / (in_bucket.sum() * len(users))
            gates[str(bucket)] = dict(zip(names, np.round(mean.numpy(), 4).tolist()))
    return spread_by_expert, gates


def window_scorer(score_windows, data: PreparedData, split: str, max_len: int):
    """users → scores of `score_windows` on their input windows of the split."""

    def score(users: np.ndarray) -> torch.Tensor:
        return score_windows(torch.from_numpy(data.input_windows(split, users, max_len)))

    return score


def expert_diagnostics(
    core: ExpertMixture, data: PreparedData, eval_config: EvalConfig, max_len: int
) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The diagnostics of every split (see the module docstring), and each expert's per-user full-ranking ranks
    per split ({split: {expert: ranks}}), for paired comparisons."""
    full_only = eval_config.model_copy(update={"num_negatives": []})
    report, ranks_by_split = {}, {}
    for split in ("valid", "test"):
        evaluator, tail = Evaluator(data, split, full_only), tail_users(data, split, eval_config)
        ranks_by_split[split] = {}
        experts = {}
        for name, expert in core.experts.items():
            ranks = evaluator.ranks(
                window_scorer(
                    lambda window, expert=expert: with_padding_masked(expert_scores(expert, window)),
                    data,
                    split,
                    max_len,
                )
            )["full"]
            ranks_by_split[split][name] = ranks
            experts[name] = ranking_summary(ranks, tail)
        spread, gates = logit_spread_and_gates(core, data, split, max_len)
        for name, summary in experts.items():
            summary.update(spread[name])
        mixture = ranking_summary(evaluator.ranks(window_scorer(core.score_all, data, split, max_len))["full"], tail)
        report[split] = {"experts": experts, "mixture": mixture, "mean_gate_by_bucket": gates}
    if core.scale is not None:
        report["temperature"] = round(float(core.scale.temperature), 4)
    return report, ranks_by_split
