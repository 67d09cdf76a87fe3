"""Phase 2 — characteristic, recommendation-anchored alignment (eq. 4–7).

The alignment expert starts from phase 1 (collaborative table and encoder) with a new text MLP and fusion,
and trains on L_REC + γ · alignment loss between the aligned text vectors and the collaborative vectors of
the batch's items. Variants (RQ2): `none` (L_REC only: the expert just fuses both inputs), `non_anchored`
(alignment loss only; the encoder and fusion, which only L_REC reaches, are frozen), `rec_anchored`, and
`rec_anchored_frozen` (collaborative table frozen).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from raylrec.data.prepared import PreparedData
from raylrec.methods.pad.config import AlignConfig, TowerConfig
from raylrec.methods.pad.mmd import alignment_loss
from raylrec.methods.pad.phase import PadStageRecipe, pretrained_id_expert, with_padding_masked
from raylrec.methods.pad.towers import Expert, alignment_expert, expert_scores
from raylrec.models.base import ModelConfig

MODEL_PREFIX = "expert."  # how the alignment expert's weights are named in this stage's model.safetensors


class AlignmentModel(nn.Module):
    def __init__(self, expert: Expert):
        super().__init__()
        self.expert = expert

    def forward(
        self,
        item_seq: torch.Tensor,
        positions: torch.Tensor | None,
        candidates: torch.Tensor | None,
        align_items: torch.Tensor | None,
    ):
        """→ the scores of the (B, L) `positions` of `item_seq` — of their (R, C) `candidates`, or of every item
        (R, num_items + 1) without candidates; None without positions — and the aligned-text and collaborative
        vectors of `align_items` (None without them). One forward, so DDP sees every used parameter."""
        logits = None
        if positions is not None:
            states = self.expert.user_states(item_seq)[positions]
            if candidates is None:
                logits = states @ self.expert.item_table().T
            else:
                logits = (states.unsqueeze(1) * self.expert.tower(candidates)).sum(-1)
        if align_items is None:
            return logits, None, None
        tower = self.expert.tower
        return logits, tower.text(align_items), tower.collaborative(align_items)

    def score_all(self, item_seq: torch.Tensor) -> torch.Tensor:
        return with_padding_masked(expert_scores(self.expert, item_seq))


def alignment_sample(
    items: torch.Tensor, max_samples: int | None, unique: bool, generator: torch.Generator
) -> torch.Tensor:
    """The batch's non-padding item occurrences (or distinct items), at most `max_samples` drawn at random."""
    real = items[items > 0]
    if unique:  # InfoNCE: a repeated item would be its own negative
        real = real.unique()
    if max_samples is not None and len(real) > max_samples:
        pick = torch.randperm(len(real), generator=generator, device=generator.device)[:max_samples]
        real = real[pick.to(real.device)]
    return real


class AlignmentRecipe(PadStageRecipe):
    def __init__(
        self,
        name: str,
        model: ModelConfig,
        towers: TowerConfig,
        align: AlignConfig,
        pretrained_dir: str | Path,
        embeddings_dir: str | Path,
    ):
        super().__init__(name, model, towers, align.train, embeddings_dir)
        self.align = align
        self.pretrained_dir = str(pretrained_dir)

    @property
    def anchored(self) -> bool:
        return self.align.variant != "non_anchored"

    @property
    def aligned(self) -> bool:
        return self.align.variant != "none"

    def build(self, data: PreparedData) -> AlignmentModel:
        phase1 = pretrained_id_expert(self.pretrained_dir, data.num_items, self.model)
        expert = alignment_expert(data.num_items, self.text_table(data), self.model, self.towers)
        expert.tower.collaborative.load_state_dict(phase1.tower.state_dict())
        expert.encoder.load_state_dict(phase1.encoder.state_dict())
        expert.tower.init_fusion()  # `balanced` sizes the text half by the phase-1 table just loaded
        if self.align.variant == "rec_anchored_frozen":
            expert.tower.collaborative.requires_grad_(False)
        if not self.anchored:
            expert.encoder.requires_grad_(False)
            if expert.tower.fuse is not None:
                expert.tower.fuse.requires_grad_(False)
        return AlignmentModel(expert)

    def loss(self, model, core, batch, generator):
        inputs, targets = batch
        positions, candidates = self.rec_inputs(inputs, targets, core.expert.num_items, generator)
        align_items = None
        if self.aligned:
            settings = self.align.loss
            # The batch's item occurrences: inputs, targets and (under BCE) the sampled negatives.
            occurrences = torch.cat([inputs, targets if candidates is None else candidates.flatten(1)], dim=1)
            align_items = alignment_sample(occurrences, settings.max_samples, settings.kernel == "infonce", generator)
        logits, text, collaborative = model(
            inputs,
            positions if self.anchored else None,
            None if candidates is None else candidates[positions],
            align_items,
        )
        if not self.aligned:
            return self.rec_loss(logits, targets[positions])
        align_term = alignment_loss(text, collaborative, self.align.loss)
        if not self.anchored:
            return align_term
        return self.rec_loss(logits, targets[positions]) + self.align.gamma * align_term

    def export(self, core: AlignmentModel, data: PreparedData, out: Path) -> dict:
        tower = core.expert.tower
        items = torch.arange(data.num_items + 1)
        save_file(
            {
                "item_embeddings": tower(items).contiguous(),
                "collaborative": tower.collaborative(items),
                "text": tower.text(items).contiguous(),
            },
            out / "item_embeddings.safetensors",
        )
        (out / "model_config.json").write_text(
            json.dumps(
                {
                    "num_items": data.num_items,
                    "model": self.model.model_dump(mode="json"),
                    "towers": self.towers.model_dump(mode="json"),
                    "embeddings_dir": self.embeddings_dir,
                    "pretrained_dir": self.pretrained_dir,
                },
                indent=2,
            )
        )
        return {"variant": self.align.variant, "kernel": self.align.loss.kernel}

    def config_dump(self) -> dict:
        return {
            "phase": "align",
            "backbone": self.backbone_stage(),
            "model": self.model.model_dump(mode="json"),
            "towers": self.towers.model_dump(mode="json"),
            "align": self.align.model_dump(mode="json"),
            "pretrained_dir": self.pretrained_dir,
            "embeddings_dir": self.embeddings_dir,
        }
