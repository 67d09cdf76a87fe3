"""Phase 3 — triple experts fused by frequency-aware gating (eq. 8–11), trained with L_REC only.

Experts: `id` (recommendation-specific: its own collaborative table and encoder, from phase 1), `align`
(the alignment expert from phase 2), `llm` (LLM-specific: its own MLP over the frozen text table and a new
encoder). The final logit of item i is Φ = Σ_e g_e(i) · o_e(i), with the gate g computed from i's
frequency bucket (B buckets of equal training-interaction mass, from the training split only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from raylrec.data.prepared import PreparedData
from raylrec.eval.buckets import frequency_buckets
from raylrec.methods.pad.alignment import MODEL_PREFIX
from raylrec.methods.pad.config import ExpertsConfig, TowerConfig
from raylrec.methods.pad.phase import PadStageRecipe, candidate_bce, load_prefixed, pretrained_id_expert, \
    with_padding_masked
from raylrec.methods.pad.towers import Expert, alignment_expert, id_expert, text_expert
from raylrec.models.base import ModelConfig

GATE_PARAMETER_PREFIX = "gate."


class FrequencyGate(nn.Module):
    """Per item, a weight per expert: sigmoid of a learned logit per (expert, bucket of the item), optionally
    plus a linear term in the expert's item vector, normalised to sum to 1 over the experts (as the public code)."""

    def __init__(self, expert_names: list[str], item_buckets: torch.Tensor, num_buckets: int, mode: str,
                 init: dict[str, tuple[float, float]], dim: int):
        super().__init__()
        self.expert_names = list(expert_names)
        self.mode = mode
        columns = 1 if mode == "global" else num_buckets
        # Items of every bucket share the one column under global gating.
        self.register_buffer("item_buckets", item_buckets.clamp(min=0) if columns > 1
                             else torch.zeros_like(item_buckets), persistent=False)
        start = torch.tensor([init[name][0] for name in expert_names]).unsqueeze(1)
        end = torch.tensor([init[name][1] for name in expert_names]).unsqueeze(1)
        ramp = torch.linspace(0, 1, num_buckets).unsqueeze(0) if columns > 1 else torch.full((1, 1), 0.5)
        self.logits = nn.Parameter(start + (end - start) * ramp)  # (experts, columns), rare → popular
        self.item_terms = nn.ModuleDict({name: nn.Linear(dim, 1, bias=False) for name in expert_names}) \
            if mode == "frequency_embedding" else None
        if self.item_terms is not None:
            for layer in self.item_terms.values():
                nn.init.zeros_(layer.weight)  # starts as pure frequency gating

    def forward(self, items: torch.Tensor, item_vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        """items (...) and each expert's item vectors (..., d) → (..., experts) weights summing to 1."""
        logits = self.logits[:, self.item_buckets[items]].movedim(0, -1)
        if self.item_terms is not None:
            logits = logits + torch.cat([self.item_terms[n](item_vectors[n]) for n in self.expert_names], -1)
        weights = torch.sigmoid(logits)
        return weights / weights.sum(-1, keepdim=True)

    def bucket_weights(self) -> torch.Tensor:
        """(columns, experts) weights of the frequency part alone (what gating learned per bucket)."""
        weights = torch.sigmoid(self.logits.T)
        return weights / weights.sum(-1, keepdim=True)


class ExpertMixture(nn.Module):
    def __init__(self, experts: dict[str, Expert], gate: FrequencyGate | None):
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.gate = gate

    @property
    def num_items(self) -> int:
        return next(iter(self.experts.values())).num_items

    def forward(self, item_seq: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """(B, L) sequences and (B, L, C) candidate items → (B, L, C) logits Φ."""
        outputs, vectors = [], {}
        for name, expert in self.experts.items():
            vectors[name] = expert.tower(candidates)
            outputs.append((expert.user_states(item_seq).unsqueeze(2) * vectors[name]).sum(-1))
        return self.combine(torch.stack(outputs, -1), candidates, vectors)

    def score_all(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, num_items + 1) Φ of every item for the state at the last position."""
        outputs, tables = [], {}
        for name, expert in self.experts.items():
            tables[name] = expert.item_table()
            outputs.append(expert.user_states(item_seq)[:, -1] @ tables[name].T)
        items = torch.arange(len(next(iter(tables.values()))), device=item_seq.device)
        return with_padding_masked(self.combine(torch.stack(outputs, -1), items, tables))

    def combine(self, outputs: torch.Tensor, items: torch.Tensor, vectors: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.gate is None:  # a single expert
            return outputs.squeeze(-1)
        return (outputs * self.gate(items, vectors)).sum(-1)


class ExpertsRecipe(PadStageRecipe):
    """Phase 3, and (with `init: scratch` and one expert) the Hybrid and MoRec baselines."""

    def __init__(self, name: str, model: ModelConfig, towers: TowerConfig, experts: ExpertsConfig,
                 embeddings_dir: str | Path | None, pretrained_dir: str | Path | None = None,
                 align_dir: str | Path | None = None):
        super().__init__(name, model, towers, experts.train, embeddings_dir)
        self.experts = experts
        self.pretrained_dir = str(pretrained_dir) if pretrained_dir else None
        self.align_dir = str(align_dir) if align_dir else None

    def build(self, data: PreparedData) -> ExpertMixture:
        experts = {name: self.build_expert(name, data) for name in self.experts.experts}
        gate = None
        if len(experts) > 1:
            buckets = frequency_buckets(data.item_train_counts(), self.experts.num_buckets)
            gate = FrequencyGate(list(experts), torch.from_numpy(buckets), self.experts.num_buckets,
                                 self.experts.gating, self.experts.gate_init, self.model.hidden_size)
        return ExpertMixture(experts, gate)

    def build_expert(self, name: str, data: PreparedData) -> Expert:
        pretrained = self.experts.init == "pretrained"
        if name == "id":
            return (pretrained_id_expert(self.pretrained_dir, data.num_items, self.model) if pretrained
                    else id_expert(data.num_items, self.model))
        if name == "llm":
            return text_expert(data.num_items, self.text_table(data), self.model, self.towers)
        expert = alignment_expert(data.num_items, self.text_table(data), self.model, self.towers)
        if pretrained:
            load_prefixed(expert, Path(self.align_dir) / "model.safetensors", MODEL_PREFIX)
        return expert

    def parameter_groups(self, core: ExpertMixture) -> list[dict]:
        # The gate's logits are not weight-decayed (as the public code): decay would pull every gate to 1/E.
        named = [(n, p) for n, p in core.named_parameters() if p.requires_grad]
        gate = [p for n, p in named if n.startswith(GATE_PARAMETER_PREFIX)]
        rest = [p for n, p in named if not n.startswith(GATE_PARAMETER_PREFIX)]
        return [{"params": rest}] + ([{"params": gate, "weight_decay": 0.0}] if gate else [])

    def loss(self, model, core, batch, generator):
        inputs, targets = batch
        candidates = self.candidates(inputs, targets, core.num_items, generator)
        return candidate_bce(model(inputs, candidates), targets)

    def export(self, core: ExpertMixture, data: PreparedData, out: Path) -> dict:
        items = torch.arange(data.num_items + 1)
        tables = {}
        for name, expert in core.experts.items():
            tables[f"{name}.item_embeddings"] = expert.tower(items)
            if name == "align":
                tables["align.collaborative"] = expert.tower.collaborative(items)
                tables["align.text"] = expert.tower.text(items)
        save_file({k: v.contiguous() for k, v in tables.items()}, out / "item_embeddings.safetensors")
        (out / "model_config.json").write_text(json.dumps({
            "num_items": data.num_items, "model": self.model.model_dump(mode="json"),
            "towers": self.towers.model_dump(mode="json"), "experts": self.experts.model_dump(mode="json"),
            "embeddings_dir": self.embeddings_dir, "pretrained_dir": self.pretrained_dir,
            "align_dir": self.align_dir}, indent=2))
        summary = {"experts": list(core.experts)}
        if core.gate is not None:
            weights = core.gate.bucket_weights().numpy()
            gates = {str(b): dict(zip(core.gate.expert_names, np.round(row, 4).tolist()))
                     for b, row in enumerate(weights)}
            (out / "gates.json").write_text(json.dumps(gates, indent=2))
            summary["gates"] = gates
        return summary

    def config_dump(self) -> dict:
        return {"phase": "experts", "model": self.model.model_dump(mode="json"),
                "towers": self.towers.model_dump(mode="json"), "experts": self.experts.model_dump(mode="json"),
                "pretrained_dir": self.pretrained_dir, "align_dir": self.align_dir,
                "embeddings_dir": self.embeddings_dir}
