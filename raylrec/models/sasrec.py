"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raylrec.models.base import ModelConfig, SequentialRecommender, register_model


@register_model("sasrec")
class SASRec(SequentialRecommender):
    def __init__(self, num_items: int, config: ModelConfig):
        super().__init__(num_items, config)
        d = config.hidden_size
        self.position_embedding = nn.Embedding(config.max_len, d)
        self.input_norm = nn.LayerNorm(d)
        self.input_dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.num_heads,
            dim_feedforward=config.inner_size,
            dropout=config.attn_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=config.norm_first,
        )
        if config.ffn_dropout is not None:
            # torch's layer applies `dropout` between linear1 and linear2
            layer.dropout = nn.Dropout(config.ffn_dropout)
        final_norm = nn.LayerNorm(d) if config.norm_first else None
        self.blocks = nn.TransformerEncoder(
            layer, num_layers=config.num_layers, norm=final_norm, enable_nested_tensor=False
        )
        causal = torch.triu(torch.ones(config.max_len, config.max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode_embeddings(self, item_vectors: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        length = item_seq.size(1)
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        # Columns that are padding in every row change no output (padding keys are masked, padding rows zeroed),
        # so the blocks run only from the first column holding an item: on sparse data (Amazon: median 4 items
        # in a 50-wide window) most of the window is such padding. Positions keep their column numbers.
        start = self.first_item_column(item_seq)
        hidden = self.encode_columns(item_vectors[:, start:], item_seq[:, start:], start)
        return F.pad(hidden, (0, 0, start, 0))

    @staticmethod
    def first_item_column(item_seq: torch.Tensor) -> int:
        """The first column with an item in any row; the last column when every row is padding."""
        occupied = (item_seq > 0).any(0).nonzero()
        return int(occupied[0]) if len(occupied) else item_seq.size(1) - 1

    def encode_columns(self, item_vectors: torch.Tensor, item_seq: torch.Tensor, first_position: int) -> torch.Tensor:
        positions = torch.arange(first_position, first_position + item_seq.size(1), device=item_seq.device)
        hidden = item_vectors + self.position_embedding(positions)
        hidden = self.input_dropout(self.input_norm(hidden))
        not_padding = (item_seq > 0).unsqueeze(-1)
        hidden = self.blocks(hidden * not_padding, mask=self.attention_mask(item_seq))
        return hidden * not_padding

    def attention_mask(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B·heads, L, L) boolean mask, True = blocked: no future positions and no padding keys.

        Each position may always attend to itself, so padding rows are never fully masked (no NaN).
        """
        length = item_seq.size(1)
        padding_keys = (item_seq == 0).unsqueeze(1)
        itself = torch.eye(length, dtype=torch.bool, device=item_seq.device)
        blocked = (self.causal_mask[:length, :length] | padding_keys) & ~itself
        return blocked.repeat_interleave(self.config.num_heads, dim=0)
