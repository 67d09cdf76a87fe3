"""Kernel two-sample statistics shared by the methods' alignment losses: PAD's multi-kernel MMD (PAD eq. 12–15,
raylrec/methods/pad/mmd.py) and IDLE-Adapter's single-Gaussian MMD (IDLE eq. 12, raylrec/methods/idle/mmd.py).

All work on one joint sample z = [x; y]: the kernel matrix of z holds the three blocks k(x, x), k(y, y), k(x, y).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_distances(z: torch.Tensor) -> torch.Tensor:
    """(n, d) → (n, n) squared Euclidean distances (the expansion needs no (n, n, d) intermediate)."""
    norms = z.pow(2).sum(-1)
    return (norms.unsqueeze(0) + norms.unsqueeze(1) - 2 * z @ z.T).clamp(min=0)


def bandwidths(distances: torch.Tensor, exponents: list[float]) -> torch.Tensor:
    """σ_u² = 2^k_u · mean of the distance matrix (diagonal included, as tllib); no gradient through it."""
    base = distances.detach().mean()
    return base * torch.tensor([2.0**k for k in exponents], dtype=distances.dtype, device=distances.device)


def median_bandwidth(distances: torch.Tensor) -> torch.Tensor:
    """ρ with 2ρ = the median squared distance of the pooled sample, diagonal left out (no gradient through it)."""
    off_diagonal = distances.detach()[~torch.eye(len(distances), dtype=torch.bool, device=distances.device)]
    return (off_diagonal.median() / 2).clamp(min=1e-6)


def kernel_matrix(z: torch.Tensor, kernel: str, exponents: list[float]) -> torch.Tensor:
    """(n, d) → (n, n) kernel values; the multi-kernel families are summed over their bandwidths."""
    if kernel == "gaussian":  # k(x, x') = exp(−‖x − x'‖² / 2σ²), PAD eq. 12
        d2 = squared_distances(z)
        return sum(torch.exp(-d2 / (2 * s)) for s in bandwidths(d2, exponents))
    if kernel == "laplacian":  # k(x, x') = exp(−‖x − x'‖₁ / σ²), PAD eq. 17
        d1 = torch.cdist(z, z, p=1)
        return sum(torch.exp(-d1 / s) for s in bandwidths(d1, exponents))
    if kernel == "linear":  # PAD eq. 14
        return z @ z.T
    if kernel == "cosine":  # 1 − cosine similarity, PAD eq. 15 (not positive definite; as the paper)
        unit = F.normalize(z, dim=-1)
        return 1 - unit @ unit.T
    raise ValueError(f"unknown kernel {kernel!r}")


def mmd_from_kernel(k: torch.Tensor, n: int, estimator: str) -> torch.Tensor:
    """MMD² of x = rows [0, n) against y = the remaining rows of a joint kernel matrix. The biased V-statistic
    takes any two sample sizes; the unbiased one is for paired samples (y has n rows too, y[i] paired with x[i])."""
    kxx, kyy, kxy = k[:n, :n], k[n:, n:], k[:n, n:]
    if estimator == "biased":
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    if estimator == "unbiased":  # Gretton et al.'s MMD²_u for paired samples: every i = j term left out
        h = kxx + kyy - kxy - kxy.T
        return (h.sum() - h.diagonal().sum()) / (n * (n - 1))
    raise ValueError(f"unknown estimator {estimator!r}")


def mk_mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    kernel: str = "gaussian",
    exponents: list[float] = (-3.0, -2.0, -1.0, 0.0, 1.0),
    estimator: str = "unbiased",
) -> torch.Tensor:
    """Squared MK-MMD between the rows of x and y (n, d each); `mask` (n,) keeps only the real rows
    (padding items must not count as samples of either distribution)."""
    if mask is not None:
        x, y = x[mask], y[mask]
    n = len(x)
    if n < 2:
        return x.sum() * 0  # nothing to compare; keeps the graph connected
    return mmd_from_kernel(kernel_matrix(torch.cat([x, y]), kernel, list(exponents)), n, estimator)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, rho: float | None = None) -> torch.Tensor:
    """Biased MMD² with one Gaussian kernel exp(−‖x − y‖² / 2ρ) between the rows of x (n, d) and y (m, d), any
    n and m; rho None = median heuristic."""
    distances = squared_distances(torch.cat([x, y]))
    bandwidth = median_bandwidth(distances) if rho is None else torch.tensor(rho, dtype=x.dtype, device=x.device)
    return mmd_from_kernel(torch.exp(-distances / (2 * bandwidth)), len(x), "biased")
