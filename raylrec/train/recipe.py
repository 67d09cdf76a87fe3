"""What a training stage plugs into the shared Ray Train loop.

The loop (raylrec/train/loop.py) owns distribution, checkpoints, resume, validation, early stopping and
reporting; a recipe owns only what differs between models and methods: how the trained module is
built, which tensors are training samples, the loss of a batch, how users are scored, and any extra
artifacts to export. Recipes must be picklable: Ray ships them to every worker.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import ScoreFn


class Recipe:
    name: str = "recipe"
    # False: checkpoints and model.safetensors keep only trainable parameters (and buffers); build() recreates
    # the frozen ones (e.g. a frozen LLM loaded from its own files).
    save_frozen: bool = True
    # Splits export_stage evaluates with the recipe's scorer; () when the method's pipeline evaluates itself.
    export_splits: tuple[str, ...] = ("valid", "test")
    # True for the ID models; the leaderboard compares every method with the strongest of them.
    is_id_model: bool = False

    def build(self, data: PreparedData) -> nn.Module:
        """The module whose parameters train (frozen parts may live inside it with requires_grad=False)."""
        raise NotImplementedError

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        """Training samples as equally long tensors; the loop batches and shards them over workers."""
        raise NotImplementedError

    def loss(
        self, model: nn.Module, core: nn.Module, batch: tuple[torch.Tensor, ...], generator: torch.Generator
    ) -> torch.Tensor:
        """Loss of one batch. `model` is the DDP-wrapped module (call it for the forward pass), `core` the bare one."""
        raise NotImplementedError

    def parameter_groups(self, core: nn.Module) -> list[dict]:
        """Optimizer parameter groups (a group may set its own `weight_decay`); default: every trainable one."""
        return [{"params": [p for p in core.parameters() if p.requires_grad]}]

    def scorer(self, core: nn.Module, data: PreparedData, split: str, device: torch.device) -> ScoreFn:
        """users → (B, num_items + 1) scores for the split's target."""
        raise NotImplementedError

    def export(self, core: nn.Module, data: PreparedData, out: Path) -> dict:
        """Extra artifacts later stages consume; returns facts for the stage summary."""
        return {}

    def config_dump(self) -> dict:
        """The method-specific configuration, saved with the metrics."""
        return {}

    def backbone_stage(self) -> str | None:
        """The stage name of the ID model this recipe builds on (the leaderboard compares the two), if any."""
        return None


def batched(function, tensor: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([function(tensor[s : s + batch_size]) for s in range(0, len(tensor), batch_size)])


def all_users(data: PreparedData) -> np.ndarray:
    return np.arange(data.num_users)
