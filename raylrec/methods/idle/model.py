"""The trained module: adapter + item head, around a frozen ID model and a frozen language model.

The frozen models are deliberately not registered as submodules, so checkpoints, `model.safetensors`, DDP's
parameter broadcast and the optimizer hold only the trainable part (eq. 16); `_apply` still moves them with
the module (`.to(device)`), and they always stay in eval mode (no dropout in the frozen networks).
"""

from __future__ import annotations

import torch
from torch import nn

from raylrec.methods.idle.adapter import IdleAdapter
from raylrec.methods.idle.config import AdapterConfig, HeadConfig
from raylrec.methods.idle.head import ItemHead
from raylrec.methods.idle.injection import Backbone, Prefix


class IdleModel(nn.Module):
    def __init__(
        self,
        backbone: Backbone,
        id_model: nn.Module,
        num_items: int,
        config: AdapterConfig,
        head: HeadConfig | None = None,
        text_rows: torch.Tensor | None = None,
    ):
        super().__init__()
        self.__dict__["frozen"] = {
            "backbone": backbone.requires_grad_(False).eval(),
            "id_model": id_model.requires_grad_(False).eval(),
        }
        self.num_items = num_items
        self.config = config
        id_dim = id_model.config.hidden_size
        kv_dim = backbone.kv_dim if config.injection == "ptuning_v2" else None
        self.adapter = IdleAdapter(id_dim, backbone.hidden_size, backbone.num_layers, config, kv_dim)
        self.head = ItemHead(
            backbone.hidden_size,
            num_items,
            id_dim,
            head or HeadConfig(),
            config.init_std,  # eq. 14
            text_rows,
        )

    @property
    def backbone(self) -> Backbone:
        return self.frozen["backbone"]

    @property
    def id_model(self) -> nn.Module:
        return self.frozen["id_model"]

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for module in self.frozen.values():
            module._apply(fn)
        return self

    @torch.no_grad()
    def user_vectors(self, windows: torch.Tensor) -> torch.Tensor:
        """u of eq. 2: the frozen ID model's representation of each (B, max_len) item window."""
        return self.id_model.user_vector(windows)

    def prefix(self, refined: torch.Tensor, key_values: torch.Tensor | None) -> Prefix:
        if key_values is not None:  # P-tuning-v2 style
            return self.backbone.prefix_from_key_values(key_values)
        return self.backbone.prefix_from_states(refined)

    def forward(self, windows: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """→ item logits (B, num_items + 1) and D (num_layers, B, L', d') for the alignment loss."""
        users = self.user_vectors(windows)
        refined, _, key_values = self.adapter(users)
        output = self.backbone(input_ids, attention_mask, self.prefix(refined, key_values))
        id_items = self.id_model.item_table()
        # The ID model's own logits (score_all without its -inf padding column, which would make τ's gradient NaN).
        id_logits = users @ id_items.T if self.head.config.id_residual else None
        return self.head(self.backbone.pool(output.last_hidden_state, attention_mask), id_items, id_logits), refined

    @torch.no_grad()
    def frozen_hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """H̃^(l), l = 0..L-1: the hidden states entering each layer in a pass without the adapter, (B, T, d')."""
        output = self.backbone(input_ids, attention_mask, None, output_hidden_states=True)
        return list(output.hidden_states[: self.backbone.num_layers])

    @torch.no_grad()
    def score(self, windows: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits, _ = self(windows, input_ids, attention_mask)
        logits[:, 0] = float("-inf")
        return logits
