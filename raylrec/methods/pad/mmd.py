"""Alignment losses between two samples of vectors: multi-kernel MMD (Gaussian, Laplacian, linear, cosine
kernels) and InfoNCE. x[i] and y[i] are the text and collaborative vectors of the same item."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylrec.methods.pad.config import AlignmentLossConfig


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, d) → (n, n) squared Euclidean distances (the expansion needs no (n, n, d) intermediate)."""
    norms = z.pow(2).sum(-1)
    return (norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * z @ z.T).clamp(min=0)


def bandwidths(distances: torch.Tensor, exponents: list[float]) -> torch.Tensor:
    """σ_u² = 2^k_u · mean of the distance matrix (diagonal included, as tllib); no gradient through it."""
    base = distances.detach().mean()
    return base * torch.tensor([2.0 ** k for k in exponents], dtype=distances.dtype, device=distances.device)


def kernel_matrix(z: torch.Tensor, kernel: str, exponents: list[float]) -> torch.Tensor:
    """(n, d) → (n, n) kernel values; the multi-kernel families are summed over their bandwidths."""
    if kernel == "gaussian":  # k(x, x') = exp(−‖x − x'‖² / 2σ²), eq. 12
        d2 = squared_distances(z)
        return sum(torch.exp(-d2 / (2 * s)) for s in bandwidths(d2, exponents))
    if kernel == "laplacian":  # k(x, x') = exp(−‖x − x'‖₁ / σ²), eq. 17
        d1 = torch.cdist(z, z, p=1)
        return sum(torch.exp(-d1 / s) for s in bandwidths(d1, exponents))
    if kernel == "linear":  # eq. 14
        return z @ z.T
    if kernel == "cosine":  # 1 − cosine similarity, eq. 15 (not positive definite; as the paper)
        unit = F.normalize(z, dim=-1)
        return 1 - unit @ unit.T
    raise ValueError(f"unknown kernel {kernel!r}")


def mmd_from_kernel(k: torch.Tensor, n: int, estimator: str) -> torch.Tensor:
    """MMD² of x = rows [0, n) against y = rows [n, 2n) of a joint kernel matrix."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    if estimator == "unbiased":  # Gretton et al.'s MMD²_u for paired samples: every i = j term left out
        h = kxx + kyy - kxy - kxy.T
        return (h.sum() - h.diagonal().sum()) / (n * (n - 1))
    raise ValueError(f"unknown estimator {estimator!r}")


def mk_mmd(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None, kernel: str = "gaussian",
           exponents: list[float] = (-3.0, -2.0, -1.0, 0.0, 1.0), estimator: str = "unbiased") -> torch.Tensor:
    """Squared MK-MMD between the rows of x and y (n, d each); `mask` (n,) keeps only the real rows
    (padding items must not count as samples of either distribution)."""
    if mask is not None:
        x, y = x[mask], y[mask]
    n = len(x)
    if n < 2:
        return x.sum() * 0  # nothing to compare; keeps the graph connected
    return mmd_from_kernel(kernel_matrix(torch.cat([x, y]), kernel, list(exponents)), n, estimator)


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss with cosine similarity (eq. 16, averaged instead of summed over i): y[i] is x[i]'s
    positive, every other y[j] a negative."""
    if mask is not None:
        x, y = x[mask], y[mask]
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


def alignment_loss(x: torch.Tensor, y: torch.Tensor, config: AlignmentLossConfig,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    if config.kernel == "infonce":
        return info_nce(x, y, config.temperature, mask)
    return mk_mmd(x, y, mask, config.kernel, config.bandwidth_exponents, config.estimator)
