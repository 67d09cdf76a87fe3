"""The recipe of the ID-based sequential backbones (SASRec, GRU4Rec, …): next-item training over windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from raylrec.data.prepared import PreparedData, left_pad_tails
from raylrec.errors import ArtifactError
from raylrec.models import build_model
from raylrec.models.base import ModelConfig, SequentialRecommender
from raylrec.train.config import StageConfig
from raylrec.train.losses import bce_loss, cross_entropy_loss, sample_negatives
from raylrec.train.recipe import Recipe, all_users, batched


def sequence_scorer(model: SequentialRecommender, data: PreparedData, split: str, device: torch.device):
    """Score function for the evaluator: the model's user vector at the split's input window."""

    def score(users: np.ndarray) -> torch.Tensor:
        window = torch.from_numpy(data.input_windows(split, users, model.config.max_len)).to(device)
        return model.score_all(model.user_vector(window))

    return score


class IDModelRecipe(Recipe):
    is_id_model = True

    def __init__(self, config: StageConfig):
        self.config = config
        self.name = config.stage_name

    def build(self, data: PreparedData) -> SequentialRecommender:
        return build_model(data.num_items, self.config.model)

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        inputs, targets = data.train_windows(self.config.model.max_len, self.config.train.window_stride)
        return torch.from_numpy(inputs), torch.from_numpy(targets)

    def loss(self, model, core, batch, generator):
        inputs, targets = batch
        hidden = model(inputs)
        if self.config.train.loss == "ce":
            return cross_entropy_loss(core, hidden, targets, self.config.train.label_smoothing)
        seen = torch.cat([inputs, targets], dim=1)
        return bce_loss(core, hidden, targets, sample_negatives(targets, seen, core.num_items, generator))

    def scorer(self, core, data, split, device):
        return sequence_scorer(core, data, split, device)

    def export(self, core: SequentialRecommender, data: PreparedData, out: Path) -> dict:
        (out / "model_config.json").write_text(
            json.dumps({"num_items": data.num_items, **self.config.model.model_dump(mode="json")}, indent=2)
        )
        save_file({"item_embeddings": core.item_table().detach().contiguous()}, out / "item_embeddings.safetensors")
        save_file(user_representations(core, data), out / "user_representations.safetensors")
        return {"model": self.config.model.name}

    def config_dump(self) -> dict:
        return self.config.model_dump(mode="json")


@torch.no_grad()
def user_representations(model: SequentialRecommender, data: PreparedData) -> dict[str, torch.Tensor]:
    """User vectors predicting each split's target, and hidden states over each user's last training window."""
    max_len = model.config.max_len
    users = all_users(data)
    train_window = torch.from_numpy(left_pad_tails(data.history("train"), users, max_len + 1))
    tensors = {"train_inputs": train_window[:, :-1], "train_targets": train_window[:, 1:]}
    tensors["train_hidden"] = batched(model.encode, tensors["train_inputs"])
    for split in ("valid", "test"):
        tensors[split] = batched(model.user_vector, torch.from_numpy(data.input_windows(split, users, max_len)))
    return {k: v.contiguous() for k, v in tensors.items()}


def load_stage_model(model_dir: Path) -> SequentialRecommender:
    """The exported best model of a finished ID-model stage, for later stages to use frozen."""
    config_file, weights = model_dir / "model_config.json", model_dir / "model.safetensors"
    for path in (config_file, weights):
        if not path.exists():
            raise ArtifactError(f"missing artifact {path}: train this model first (`raylrec train`)")
    saved = json.loads(config_file.read_text())
    model = build_model(saved.pop("num_items"), ModelConfig(**saved))
    model.load_state_dict(load_file(weights))
    return model.eval()
