"""Next-item losses over every position of a left-padded window at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylrec.models.base import SequentialRecommender


def cross_entropy_loss(
    model: SequentialRecommender, hidden: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Softmax over all items at each non-padding position; `label_smoothing` spreads that share of the target
    over the real items (never the padding column)."""
    real = targets > 0
    logits = model.score_all(hidden[real])
    if label_smoothing:
        logits = logits[:, 1:]  # padding id 0 is no item to spread mass onto
        return F.cross_entropy(logits, targets[real] - 1, label_smoothing=label_smoothing)
    return F.cross_entropy(logits, targets[real])


def sample_negatives(
    targets: torch.Tensor, seen: torch.Tensor, num_items: int, generator: torch.Generator | None, retries: int = 3
) -> torch.Tensor:
    """One uniform negative per target position, re-drawn (a few times) when it is among the `seen` items."""
    negatives = torch.randint(1, num_items + 1, targets.shape, generator=generator, device=targets.device)
    for _ in range(retries):
        collide = (negatives.unsqueeze(-1) == seen.unsqueeze(1)).any(-1)
        if not collide.any():
            break
        redraw = torch.randint(1, num_items + 1, negatives.shape, generator=generator, device=targets.device)
        negatives = torch.where(collide, redraw, negatives)
    return negatives


def bce_loss(
    model: SequentialRecommender, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the positive against one sampled negative at each non-padding position."""
    real = targets > 0
    table = model.item_table()
    h = hidden[real]
    positive = (h * table[targets[real]]).sum(-1)
    negative = (h * table[negatives[real]]).sum(-1)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()
