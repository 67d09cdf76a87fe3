"""Eq. 5–7: per-layer dimensionality alignment p^(l) = W_u^(l) u + b_u^(l), repeated L' times (P^(l)); a learned
prefix C^(l); a token-level gate g^(l) = σ(Concat(C^(l), P^(l)) W_g); D^(l) = g ⊙ C^(l) + (1 − g) ⊙ P^(l).

Parameters of all layers live in stacked tensors (one batched einsum instead of L small Linear layers). With
`layerwise=False` ("w/o LayerWise") a single set is shared by every layer. With `kv_dim` (the P-tuning-v2 style
injection) each layer also maps D^(l) straight to its key and value vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from raylrec.methods.idle.config import AdapterConfig


def refine(
    prefix: torch.Tensor, projected: torch.Tensor, gate_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6–7 for (n, B, L', d') prefix C (broadcast over B) and projection P, gate weights (n or 1, 2d').
    → D (n, B, L', d') and g (n, B, L')."""
    prefix = prefix.expand_as(projected)
    logits = torch.einsum(
        "nbtk,nk->nbt", torch.cat([prefix, projected], dim=-1), gate_weight.expand(projected.size(0), -1)
    )
    gate = torch.sigmoid(logits)
    return gate.unsqueeze(-1) * prefix + (1 - gate.unsqueeze(-1)) * projected, gate


def truncated_normal(shape: tuple[int, ...], std: float) -> nn.Parameter:
    tensor = torch.empty(shape)
    nn.init.trunc_normal_(tensor, std=std, a=-std, b=std)
    return nn.Parameter(tensor)


class IdleAdapter(nn.Module):
    def __init__(self, id_dim: int, hidden: int, num_layers: int, config: AdapterConfig, kv_dim: int | None = None):
        super().__init__()
        self.config = config
        self.num_layers = num_layers
        self.hidden = hidden
        sets = num_layers if config.layerwise else 1
        std = config.init_std
        self.user_weight = truncated_normal((sets, hidden, id_dim), std)  # W_u^(l)
        self.user_bias = truncated_normal((sets, hidden), std)  # b_u^(l)
        if config.refinement:
            self.prefix = truncated_normal((sets, config.prompt_length, hidden), std)  # C^(l)
            self.gate_weight = truncated_normal((sets if config.gate_per_layer else 1, 2 * hidden), std)  # W_g
        if kv_dim is not None:  # P-tuning v2 style: D^(l) → [k; v] of layer l
            self.kv_weight = truncated_normal((sets, 2 * kv_dim, hidden), std)
            self.kv_bias = truncated_normal((sets, 2 * kv_dim), std)

    def project(self, user: torch.Tensor) -> torch.Tensor:
        """Eq. 5, repeated L' times: (B, d) → P (sets, B, L', d')."""
        projected = torch.einsum("nhd,bd->nbh", self.user_weight, user) + self.user_bias.unsqueeze(1)
        return projected.unsqueeze(2).expand(-1, -1, self.config.prompt_length, -1)

    def forward(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, d) user vectors → D (num_layers, B, L', d'), the gate (num_layers, B, L') or None, and for the
        P-tuning-v2 injection the key/value vectors (num_layers, B, L', 2·kv_dim), else None. Everything that reads
        the adapter's parameters runs inside this forward (DeepSpeed ZeRO-3 gathers them around it)."""
        projected = self.project(user)
        gate = None
        if self.config.refinement:
            refined, gate = refine(self.prefix.unsqueeze(1), projected, self.gate_weight)
        else:
            refined = projected
        if not self.config.layerwise:
            refined = refined.expand(self.num_layers, -1, -1, -1)
            gate = gate.expand(self.num_layers, -1, -1) if gate is not None else None
        return refined, gate, self.key_values(refined) if hasattr(self, "kv_weight") else None

    def key_values(self, refined: torch.Tensor) -> torch.Tensor:
        """P-tuning-v2 mapping: D (num_layers, B, L', d') → (num_layers, B, L', 2·kv_dim)."""
        weight, bias = self.kv_weight, self.kv_bias
        if not self.config.layerwise:
            weight, bias = weight.expand(self.num_layers, -1, -1), bias.expand(self.num_layers, -1)
        return torch.einsum("nbth,nkh->nbtk", refined, weight) + bias[:, None, None, :]
