"""Phase 3's model: experts fused by a frequency-aware gate (eq. 8–11), optionally on normalised expert logits.

The final logit of item i for a user state is Φ = Σ_e g_e · o_e(i): o_e the expert's dot product of its user
state and its item vector, g_e the gate (from i's frequency bucket, and under eq. 11 also from the expert's
embeddings). With `ExpertScale`, each o_e is first z-scored over the items and Φ scaled by one learned temperature.
"""

from __future__ import annotations

import torch
from torch import nn

from raylrec.methods.pad.phase import with_padding_masked
from raylrec.methods.pad.towers import Expert


class FrequencyGate(nn.Module):
    """Per item (and user), a weight per expert: sigmoid of a learned logit per (expert, bucket of the item),
    normalised to sum to 1 over the experts (as the public code). Under `frequency_embedding` (eq. 11: g_e sees
    b(i) and the expert's embeddings) each expert's logit also gets a linear term in its layer-normed target item
    vector and one in its layer-normed user state; both start at zero, so the gate starts as the frequency gate."""

    def __init__(
        self,
        expert_names: list[str],
        item_buckets: torch.Tensor,
        num_buckets: int,
        mode: str,
        init: dict[str, tuple[float, float]],
        dim: int,
    ):
        super().__init__()
        self.expert_names = list(expert_names)
        self.mode = mode
        columns = 1 if mode == "global" else num_buckets
        # Items of every bucket share the one column under global gating.
        self.register_buffer(
            "item_buckets",
            item_buckets.clamp(min=0) if columns > 1 else torch.zeros_like(item_buckets),
            persistent=False,
        )
        start = torch.tensor([init[name][0] for name in expert_names]).unsqueeze(1)
        end = torch.tensor([init[name][1] for name in expert_names]).unsqueeze(1)
        ramp = torch.linspace(0, 1, num_buckets).unsqueeze(0) if columns > 1 else torch.full((1, 1), 0.5)
        self.logits = nn.Parameter(start + (end - start) * ramp)  # (experts, columns), rare → popular
        self.item_terms = self.embedding_terms(dim) if mode == "frequency_embedding" else None
        self.user_terms = self.embedding_terms(dim) if mode == "frequency_embedding" else None

    def embedding_terms(self, dim: int) -> nn.ModuleDict:
        # Layer norm without affine weights: the term sees the vector's direction pattern, not its size, which
        # training is free to change.
        terms = nn.ModuleDict(
            {
                name: nn.Sequential(nn.LayerNorm(dim, elementwise_affine=False), nn.Linear(dim, 1, bias=False))
                for name in self.expert_names
            }
        )
        for term in terms.values():
            nn.init.zeros_(term[1].weight)
        return terms

    def forward(
        self,
        items: torch.Tensor,
        item_vectors: dict[str, torch.Tensor],
        user_states: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Items (..., C) with each expert's item vectors (..., C, d), and optionally each expert's user states
        (R, d) → (..., C, experts) weights summing to 1 over the experts. With user states, the item dimensions
        must broadcast against (R, 1): items (C,) give (R, C, experts), items (R, C) give (R, C, experts)."""
        logits = self.logits[:, self.item_buckets[items]].movedim(0, -1)
        if self.item_terms is not None:
            logits = logits + torch.cat([self.item_terms[n](item_vectors[n]) for n in self.expert_names], -1)
            if user_states is not None:
                users = torch.cat([self.user_terms[n](user_states[n]) for n in self.expert_names], -1)
                logits = logits + users.unsqueeze(-2)
        weights = torch.sigmoid(logits)
        return weights / weights.sum(-1, keepdim=True)

    def bucket_weights(self) -> torch.Tensor:
        """(columns, experts) weights of the frequency part alone (what gating learned per bucket)."""
        weights = torch.sigmoid(self.logits.T)
        return weights / weights.sum(-1, keepdim=True)


class ExpertScale(nn.Module):
    """Normalised expert logits: each expert's logits z-scored over the real items (per user state, a layer norm
    over the item axis without affine weights), and the gated sum scaled by one learned temperature τ = exp(log_tau).
    Multiplying one expert's logits by any positive factor leaves Φ unchanged."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.log_tau = nn.Parameter(torch.tensor(float(temperature)).log())

    @staticmethod
    def standardize(logits: torch.Tensor) -> torch.Tensor:
        """(..., num_items + 1, experts) → z-scores over items 1..num_items (column 0, padding, becomes 0)."""
        real = logits[..., 1:, :]
        z = (real - real.mean(-2, keepdim=True)) / real.std(-2, keepdim=True).clamp(min=1e-6)
        return torch.cat([torch.zeros_like(logits[..., :1, :]), z], dim=-2)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_tau.exp()


class ExpertMixture(nn.Module):
    def __init__(self, experts: dict[str, Expert], gate: FrequencyGate | None, scale: ExpertScale | None = None):
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.gate = gate
        self.scale = scale

    @property
    def num_items(self) -> int:
        return next(iter(self.experts.values())).num_items

    def states(self, item_seq: torch.Tensor, positions: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Each expert's (R, d) user states at the (B, L) `positions` (None: the last position of each row)."""
        out = {}
        for name, expert in self.experts.items():
            states = expert.user_states(item_seq)
            out[name] = states[:, -1] if positions is None else states[positions]
        return out

    def forward(
        self, item_seq: torch.Tensor, positions: torch.Tensor | None = None, candidates: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Φ at the (B, L) `positions` of `item_seq` (None: each row's last position): of the (R, C) `candidates`,
        or of every item (R, num_items + 1) without them."""
        states = self.states(item_seq, positions)
        if candidates is None or self.scale is not None:  # normalising needs every item's logit
            scores = self.mix_all(states)
            return scores if candidates is None else scores.gather(1, candidates)
        vectors = {name: expert.tower(candidates) for name, expert in self.experts.items()}
        outputs = torch.stack([(states[n].unsqueeze(1) * vectors[n]).sum(-1) for n in self.experts], -1)
        return self.combine(outputs, candidates, vectors, states)

    def expert_logits(
        self, states: dict[str, torch.Tensor], tables: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """(R, num_items + 1, experts) raw logits o_e of every item."""
        tables = tables or self.item_tables()
        return torch.stack([states[n] @ tables[n].T for n in self.experts], -1)

    def item_tables(self) -> dict[str, torch.Tensor]:
        return {name: expert.item_table() for name, expert in self.experts.items()}

    def mix_all(self, states: dict[str, torch.Tensor]) -> torch.Tensor:
        """(R, num_items + 1) Φ of every item (padding column not masked)."""
        tables = self.item_tables()
        items = torch.arange(self.num_items + 1, device=next(iter(tables.values())).device)
        return self.combine(self.expert_logits(states, tables), items, tables, states)

    def combine(
        self,
        outputs: torch.Tensor,
        items: torch.Tensor,
        vectors: dict[str, torch.Tensor],
        states: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        if self.gate is None:  # a single expert
            return outputs.squeeze(-1)
        if self.scale is not None:
            outputs = ExpertScale.standardize(outputs)
        mixed = (outputs * self.gate(items, vectors, states)).sum(-1)
        return mixed * self.scale.temperature if self.scale is not None else mixed

    def score_all(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, num_items + 1) Φ of every item for the state at the last position."""
        return with_padding_masked(self.forward(item_seq))
