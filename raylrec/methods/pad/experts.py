"""Phase 3 — triple experts fused by frequency-aware gating (eq. 8–11), trained with L_REC only.

Experts: `id` (recommendation-specific: its own collaborative table and encoder, from phase 1), `align`
(the alignment expert from phase 2), `llm` (LLM-specific: its own MLP over the frozen text table and a new
encoder). The final logit of item i is Φ = Σ_e g_e(i) · o_e(i), with the gate g computed from i's
frequency bucket (B buckets of equal training-interaction mass, from the training split only); see mixture.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from raylrec.data.prepared import PreparedData
from raylrec.eval.buckets import frequency_buckets
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.methods.pad.alignment import MODEL_PREFIX
from raylrec.methods.pad.config import ExpertsConfig, TowerConfig
from raylrec.methods.pad.diagnostics import expert_diagnostics
from raylrec.methods.pad.mixture import ExpertMixture, ExpertScale, FrequencyGate
from raylrec.methods.pad.phase import PadStageRecipe, load_prefixed, pretrained_id_expert
from raylrec.methods.pad.towers import Expert, alignment_expert, id_expert, text_expert
from raylrec.models.base import ModelConfig

GATE_PARAMETER_PREFIXES = ("gate.", "scale.")
DIAGNOSTICS_FILE = "expert_diagnostics.json"
TEMPERATURE_SAMPLE_WINDOWS = 64  # training windows whose logit spread sets the start of the temperature


def expert_ranks_file(stage_dir: Path, split: str, expert: str) -> Path:
    """Per-user full-ranking ranks of one expert alone (raylrec/eval/ranks.py format), for paired comparisons."""
    return Path(stage_dir) / f"ranks_{split}_expert-{expert}.parquet"


class ExpertsRecipe(PadStageRecipe):
    """Phase 3, and (with `init: scratch` and one expert) the Hybrid and MoRec baselines."""

    def __init__(
        self,
        name: str,
        model: ModelConfig,
        towers: TowerConfig,
        experts: ExpertsConfig,
        embeddings_dir: str | Path | None,
        pretrained_dir: str | Path | None = None,
        align_dir: str | Path | None = None,
        eval_config: EvalConfig | None = None,
    ):
        super().__init__(name, model, towers, experts.train, embeddings_dir)
        self.experts = experts
        self.pretrained_dir = str(pretrained_dir) if pretrained_dir else None
        self.align_dir = str(align_dir) if align_dir else None
        self.eval_config = eval_config or EvalConfig()

    def build(self, data: PreparedData) -> ExpertMixture:
        experts = {name: self.build_expert(name, data) for name in self.experts.experts}
        for name in self.experts.freeze:
            experts[name].requires_grad_(False)
        if len(experts) == 1:
            return ExpertMixture(experts, None)
        buckets = frequency_buckets(data.item_train_counts(), self.experts.num_buckets)
        gate = FrequencyGate(
            list(experts),
            torch.from_numpy(buckets),
            self.experts.num_buckets,
            self.experts.gating,
            self.experts.gate_init,
            self.model.hidden_size,
        )
        scale = None
        if self.experts.normalize == "standardize":
            scale = ExpertScale(self.initial_temperature(next(iter(experts.values())), data))
        return ExpertMixture(experts, gate, scale)

    @torch.no_grad()
    def initial_temperature(self, expert: Expert, data: PreparedData) -> float:
        """The first expert's (the ID expert's) logit spread over the items, averaged over the trained positions
        of the first training windows: Φ starts on that expert's scale, so the loss starts where phase 1 left it
        (a learned temperature moves too slowly to find it from 1 within a few epochs)."""
        inputs, targets = (t[:TEMPERATURE_SAMPLE_WINDOWS] for t in self.training_tensors(data))
        was_training = expert.training
        expert.eval()
        states = expert.user_states(inputs)[targets > 0]
        expert.train(was_training)
        return float((states @ expert.item_table()[1:].T).std(-1).mean().clamp(min=1e-3))

    def build_expert(self, name: str, data: PreparedData) -> Expert:
        pretrained = self.experts.init == "pretrained"
        if name == "id":
            return (
                pretrained_id_expert(self.pretrained_dir, data.num_items, self.model)
                if pretrained
                else id_expert(data.num_items, self.model)
            )
        if name == "llm":
            return text_expert(data.num_items, self.text_table(data), self.model, self.towers)
        expert = alignment_expert(data.num_items, self.text_table(data), self.model, self.towers)
        if pretrained:
            load_prefixed(expert, Path(self.align_dir) / "model.safetensors", MODEL_PREFIX)
        return expert

    def parameter_groups(self, core: ExpertMixture) -> list[dict]:
        # The gate's logits and the temperature are not weight-decayed (as the public code): decay would pull
        # every gate to 1/E. They may have their own learning rate (`experts.gate_lr`).
        named = [(n, p) for n, p in core.named_parameters() if p.requires_grad]
        gate = [p for n, p in named if n.startswith(GATE_PARAMETER_PREFIXES)]
        rest = [p for n, p in named if not n.startswith(GATE_PARAMETER_PREFIXES)]
        gate_group = {"params": gate, "weight_decay": 0.0}
        if self.experts.gate_lr is not None:
            gate_group["lr"] = self.experts.gate_lr
        return [{"params": rest}] + ([gate_group] if gate else [])

    def loss(self, model, core, batch, generator):
        inputs, targets = batch
        positions, candidates = self.rec_inputs(inputs, targets, core.num_items, generator)
        scores = model(inputs, positions, None if candidates is None else candidates[positions])
        return self.rec_loss(scores, targets[positions])

    def export(self, core: ExpertMixture, data: PreparedData, out: Path) -> dict:
        items = torch.arange(data.num_items + 1)
        tables = {}
        for name, expert in core.experts.items():
            tables[f"{name}.item_embeddings"] = expert.tower(items)
            if name == "align":
                tables["align.collaborative"] = expert.tower.collaborative(items)
                tables["align.text"] = expert.tower.text(items)
        save_file({k: v.contiguous() for k, v in tables.items()}, out / "item_embeddings.safetensors")
        (out / "model_config.json").write_text(
            json.dumps(
                {
                    "num_items": data.num_items,
                    "model": self.model.model_dump(mode="json"),
                    "towers": self.towers.model_dump(mode="json"),
                    "experts": self.experts.model_dump(mode="json"),
                    "embeddings_dir": self.embeddings_dir,
                    "pretrained_dir": self.pretrained_dir,
                    "align_dir": self.align_dir,
                },
                indent=2,
            )
        )
        summary = {"experts": list(core.experts)}
        if core.gate is None:
            return summary
        weights = core.gate.bucket_weights().numpy()
        gates = {str(b): dict(zip(core.gate.expert_names, np.round(row, 4).tolist())) for b, row in enumerate(weights)}
        (out / "gates.json").write_text(json.dumps(gates, indent=2))
        summary["gates"] = gates
        diagnostics, ranks = expert_diagnostics(core, data, self.eval_config, self.model.max_len)
        (out / DIAGNOSTICS_FILE).write_text(json.dumps(diagnostics, indent=2))
        for split, by_expert in ranks.items():
            evaluator = Evaluator(data, split, self.eval_config.model_copy(update={"num_negatives": []}))
            for name, expert_ranks in by_expert.items():
                evaluator.write_ranks(expert_ranks_file(out, split, name), {"full": expert_ranks})
        summary["diagnostics"] = diagnostics
        return summary

    def config_dump(self) -> dict:
        return {
            "phase": "experts",
            "backbone": self.backbone_stage(),
            "model": self.model.model_dump(mode="json"),
            "towers": self.towers.model_dump(mode="json"),
            "experts": self.experts.model_dump(mode="json"),
            "pretrained_dir": self.pretrained_dir,
            "align_dir": self.align_dir,
            "embeddings_dir": self.embeddings_dir,
        }
