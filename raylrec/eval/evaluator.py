"""The one evaluator every model goes through: same split, same candidates, same metrics.

A model is evaluated through a score function `users → (B, num_items + 1) scores`; the evaluator
owns everything else — which users, which history is masked, which stored negatives are candidates,
how ranks become metrics, and how users are grouped into buckets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from raylrec.config import StrictModel
from raylrec.data.prepared import CSR, PreparedData
from raylrec.eval.buckets import (
    WARM_COLD_ORDER,
    frequency_buckets,
    length_bucket_names,
    length_labels,
    warm_cold_labels,
)
from raylrec.eval.metrics import mean_metrics, target_ranks
from raylrec.eval.ranks import write_ranks

ScoreFn = Callable[[np.ndarray], torch.Tensor]


class EvalConfig(StrictModel):
    ks: list[int] = [1, 5, 10, 20]
    exclude_history: bool = True  # mask items the user already interacted with (never the target)
    num_negatives: list[int] = [19, 100]  # sampled protocols: 1 positive + n stored negatives
    warm_cold_fraction: float = 0.35
    frequency_buckets: int = 10
    length_edges: list[int] = [20, 50, 100, 200]
    batch_size: int = 512


def history_mask(history: CSR, users: np.ndarray, num_columns: int) -> torch.Tensor:
    """(B, num_columns) boolean mask of each user's history items, built from CSR rows."""
    lengths = history.lengths[users]
    rows = np.repeat(np.arange(len(users)), lengths)
    columns = np.concatenate([history.row(u) for u in users]) if len(users) else np.zeros(0, dtype=np.int64)
    mask = torch.zeros(len(users), num_columns, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(columns.astype(np.int64))] = True
    return mask


class Evaluator:
    def __init__(self, data: PreparedData, split: Literal["valid", "test"], config: EvalConfig | None = None):
        self.data = data
        self.split = split
        self.config = config or EvalConfig()
        self.targets = data.targets(split)
        self.history = data.history(split)
        self.negatives = {n: data.negatives[(split, n)] for n in self.config.num_negatives}

    @torch.no_grad()
    def ranks(self, score_fn: ScoreFn, users: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per-user 0-based ranks of the target: `full` (all items) and `sampled_<n>` (stored candidates)."""
        users = np.arange(self.data.num_users) if users is None else np.asarray(users)
        out: dict[str, list[np.ndarray]] = {"full": [], **{f"sampled_{n}": [] for n in self.negatives}}
        for start in range(0, len(users), self.config.batch_size):
            batch = users[start : start + self.config.batch_size]
            scores = score_fn(batch).detach().float().cpu().clone()
            targets = torch.from_numpy(self.targets[batch])
            for n, negatives in self.negatives.items():
                candidates = torch.cat([targets.unsqueeze(1), torch.from_numpy(negatives[batch])], dim=1)
                sampled = scores.gather(1, candidates)
                out[f"sampled_{n}"].append(target_ranks(sampled, torch.zeros_like(targets)).numpy())
            scores[:, 0] = float("-inf")
            if self.config.exclude_history:
                mask = history_mask(self.history, batch, scores.size(1))
                mask[torch.arange(len(batch)), targets] = False  # a repeated target item stays rankable
                scores[mask] = float("-inf")
            out["full"].append(target_ranks(scores, targets).numpy())
        return {name: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for name, parts in out.items()}

    def summarize(self, ranks: dict[str, np.ndarray], users: np.ndarray | None = None) -> dict:
        """Overall metrics per protocol, and full-ranking metrics per bucket."""
        users = np.arange(self.data.num_users) if users is None else np.asarray(users)
        ks = self.config.ks
        summary: dict = {protocol: mean_metrics(r, ks) for protocol, r in ranks.items()}
        counts = self.data.item_train_counts()
        target_items = self.targets[users]
        groupings = {  # name → (label of each user, labels in display order)
            "warm_cold": (warm_cold_labels(counts, self.config.warm_cold_fraction)[target_items], WARM_COLD_ORDER),
            "frequency": (
                frequency_buckets(counts, self.config.frequency_buckets)[target_items],
                range(self.config.frequency_buckets),
            ),
            "history_length": (
                length_labels(self.history.lengths[users], self.config.length_edges),
                length_bucket_names(self.config.length_edges),
            ),
        }
        summary["buckets"] = {
            name: {str(label): mean_metrics(ranks["full"][labels == label], ks) for label in order}
            for name, (labels, order) in groupings.items()
        }
        return summary

    def evaluate(self, score_fn: ScoreFn) -> dict:
        return self.summarize(self.ranks(score_fn))

    def write_ranks(self, path: Path, ranks: dict[str, np.ndarray], users: np.ndarray | None = None) -> None:
        """Store the per-user ranks with each user's target and its frequency bucket (raylrec/eval/ranks.py)."""
        users = np.arange(self.data.num_users) if users is None else np.asarray(users)
        targets = self.targets[users]
        buckets = frequency_buckets(self.data.item_train_counts(), self.config.frequency_buckets)[targets]
        write_ranks(path, users, targets, buckets, ranks)


def write_metrics(
    path: Path, *, model: str, split: str, metrics: dict, config: dict, data: PreparedData, extra: dict | None = None
) -> None:
    """One metrics JSON per model and split, with the config and data fingerprint that produced it."""
    record = {
        "model": model,
        "split": split,
        "metrics": metrics,
        "data_fingerprint": data.fingerprint,
        "dataset": data.report.get("dataset"),
        "config": config,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
