"""PAD's alignment losses between two samples of vectors: multi-kernel MMD (Gaussian, Laplacian, linear, cosine
kernels; the kernels themselves are shared with IDLE in raylrec/train/mmd.py) and InfoNCE. x[i] and y[i] are the
text and collaborative vectors of the same item."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raylrec.methods.pad.config import AlignmentLossConfig
from raylrec.train.mmd import mk_mmd


def info_nce(x: torch.Tensor, y: torch.Tensor, temperature: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss with cosine similarity (eq. 16, averaged instead of summed over i): y[i] is x[i]'s
    positive, every other y[j] a negative."""
    if mask is not None:
        x, y = x[mask], y[mask]
    logits = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(x), device=x.device))


def alignment_loss(
    x: torch.Tensor, y: torch.Tensor, config: AlignmentLossConfig, mask: torch.Tensor | None = None
) -> torch.Tensor:
    if config.kernel == "infonce":
        return info_nce(x, y, config.temperature, mask)
    return mk_mmd(x, y, mask, config.kernel, config.bandwidth_exponents, config.estimator)
