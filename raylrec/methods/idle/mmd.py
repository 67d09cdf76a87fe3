"""Eq. 12: MMD with one Gaussian kernel K(x, y) = exp(−‖x − y‖² / 2ρ) (the biased V-statistic the paper writes),
between the adapted representations D^(l) and the frozen LLM's hidden states H̃^(l), summed over layers.

The kernel statistics are shared with PAD (raylrec/train/mmd.py). PAD's unbiased estimator pairs x[i] with y[i];
here the two samples have different sizes (B·L' virtual tokens vs. real prompt tokens), so the biased one is used.
"""

from __future__ import annotations

import torch

from raylrec.train.mmd import gaussian_mmd


def layerwise_mmd(refined: torch.Tensor, hidden: list[torch.Tensor], rho: float | None = None) -> torch.Tensor:
    """Σ_l MMD²(D^(l), H̃^(l)): refined (L, B, L', d'), hidden[l] (rows_l, d')."""
    return sum(
        gaussian_mmd(refined[layer].reshape(-1, refined.size(-1)), hidden[layer], rho)
        for layer in range(refined.size(0))
    )
