"""What PAD's training stages share: next-item windows, the recommendation loss L_REC (BCE with one sampled
negative per position, or cross-entropy over all items), full-ranking scores, and the frozen text table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError
from raylrec.methods.pad.config import PhaseTrainConfig, TowerConfig
from raylrec.methods.pad.towers import Expert, id_expert, prepare_text, split_backbone_state
from raylrec.models.base import ModelConfig
from raylrec.text.artifacts import load_item_embeddings
from raylrec.train.id_model import load_stage_model
from raylrec.train.losses import sample_negatives
from raylrec.train.recipe import Recipe


def candidate_bce(logits: torch.Tensor) -> torch.Tensor:
    """BCE of (R, 2) logits [positive, negative], one row per trained position."""
    return -(F.logsigmoid(logits[:, 0]) + F.logsigmoid(-logits[:, 1])).mean()


def all_item_ce(scores: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of (R, num_items + 1) scores over the real items (the padding column never competes)."""
    return F.cross_entropy(scores[:, 1:], targets - 1, label_smoothing=label_smoothing)


def with_padding_masked(scores: torch.Tensor) -> torch.Tensor:
    scores[..., 0] = float("-inf")
    return scores


class PadStageRecipe(Recipe):
    pretrained_dir: str | None = None  # phase 1's stage folder, set by the phases that start from it

    def __init__(
        self,
        name: str,
        model: ModelConfig,
        towers: TowerConfig,
        train: PhaseTrainConfig,
        embeddings_dir: str | Path | None,
    ):
        self.name = name
        self.model = model
        self.towers = towers
        self.train = train
        self.embeddings_dir = str(embeddings_dir) if embeddings_dir else None

    def backbone_stage(self) -> str | None:
        """Phase 1's stage, when this phase starts from it (Hybrid and MoRec train from scratch)."""
        return Path(self.pretrained_dir).name if self.pretrained_dir else None

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        inputs, targets = data.train_windows(self.model.max_len, self.train.window_stride)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    @staticmethod
    def candidates(
        inputs: torch.Tensor, targets: torch.Tensor, num_items: int, generator: torch.Generator
    ) -> torch.Tensor:
        """(B, L, 2): each position's target and one uniform negative outside the window's items."""
        negatives = sample_negatives(targets, torch.cat([inputs, targets], dim=1), num_items, generator)
        return torch.stack([targets, negatives], dim=-1)

    def rec_inputs(
        self, inputs: torch.Tensor, targets: torch.Tensor, num_items: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """What L_REC scores: the (B, L) mask of trained positions, and under BCE the (B, L, 2) candidates
        [target, sampled negative] of every position; None under cross-entropy, which scores every item."""
        positions = targets > 0
        if self.train.loss == "ce":
            return positions, None
        return positions, self.candidates(inputs, targets, num_items, generator)

    def rec_loss(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """L_REC of the trained positions' scores: (R, 2) candidate logits under BCE, (R, num_items + 1) under CE."""
        if self.train.loss == "ce":
            return all_item_ce(scores, targets, self.train.label_smoothing)
        return candidate_bce(scores)

    def scorer(self, core, data, split, device):
        def score(users: np.ndarray) -> torch.Tensor:
            window = torch.from_numpy(data.input_windows(split, users, self.model.max_len)).to(device)
            return core.score_all(window)

        return score

    def text_table(self, data: PreparedData) -> torch.Tensor:
        if self.embeddings_dir is None:
            raise ArtifactError(f"stage {self.name} needs item text embeddings; none were given")
        vectors = load_item_embeddings(self.embeddings_dir, data=data).vectors
        return prepare_text(vectors, self.towers.standardize_text)


def pretrained_id_expert(stage_dir: str | Path, num_items: int, model: ModelConfig) -> Expert:
    """Phase 1's exported backbone as an expert: its item table becomes the expert's ID tower."""
    backbone = load_stage_model(Path(stage_dir))
    if backbone.config != model:
        raise ArtifactError(
            f"{stage_dir} holds a {backbone.config.model_dump()} backbone, but this stage expects "
            f"{model.model_dump()}; retrain phase 1 or align the model settings"
        )
    table, encoder_state = split_backbone_state(backbone.state_dict())
    expert = id_expert(num_items, model)
    expert.tower.embedding.weight.data.copy_(table)
    expert.encoder.load_state_dict(encoder_state)
    return expert


def load_prefixed(module: torch.nn.Module, weights: Path, prefix: str) -> None:
    """Load the `prefix`-ed entries of a saved state dict (another stage's model) into `module`."""
    if not weights.exists():
        raise ArtifactError(f"missing artifact {weights}: run the stage that makes it first")
    state = {k[len(prefix) :]: v for k, v in load_file(str(weights)).items() if k.startswith(prefix)}
    module.load_state_dict(state)
