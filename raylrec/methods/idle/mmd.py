"""Eq. 12: MMD with one Gaussian kernel K(x, y) = exp(−‖x − y‖² / 2ρ) (the biased V-statistic the paper writes),
between the adapted representations D^(l) and the frozen LLM's hidden states H̃^(l), summed over layers.

Squared distances come from PAD's implementation (raylrec/methods/pad/mmd.py). PAD's estimator pairs x[i] with
y[i]; here the two samples have different sizes (B·L' virtual tokens vs. real prompt tokens), so the three
kernel means are taken separately.
"""

from __future__ import annotations

import torch

from raylrec.methods.pad.mmd import squared_distances


def median_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """ρ with 2ρ = the median squared distance of the pooled sample (no gradient through it)."""
    off_diagonal = distances.detach()[~torch.eye(len(distances), dtype=torch.bool, device=distances.device)]
    return (off_diagonal.median() / 2).clamp(min=1e-6)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, rho: float | None = None) -> torch.Tensor:
    """Biased MMD² between the rows of x (n, d) and y (m, d); rho None = median heuristic."""
    n = len(x)
    distances = squared_distances(torch.cat([x, y]))
    bandwidth = median_bandwidth(distances) if rho is None else torch.tensor(rho, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-distances / (2 * bandwidth))
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def layerwise_mmd(refined: torch.Tensor, hidden: list[torch.Tensor], rho: float | None = None) -> torch.Tensor:
    """Σ_l MMD²(D^(l), H̃^(l)): refined (L, B, L', d'), hidden[l] (rows_l, d')."""
    return sum(gaussian_mmd(refined[layer].reshape(-1, refined.size(-1)), hidden[layer], rho)
               for layer in range(refined.size(0)))
