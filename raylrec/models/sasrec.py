"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raylrec.models.base import ModelConfig, SequentialRecommender, register_model

# Row groups of similar length that a batch is encoded in (SASRec.encode_embeddings): more groups skip more padding
# but run smaller matrix products; 4 measured fastest on Amazon Beauty's windows
# (docs/results/2026-12-07-amazon-speed.md).
LENGTH_GROUPS = 4


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
        if len(item_seq) == 0:
            return torch.zeros_like(item_vectors)
        # Columns that are padding in every row of a group change none of its outputs (padding keys are masked,
        # padding rows zeroed), so the rows are encoded in groups of similar length, each group from its first column
        # holding an item: on sparse data (Amazon: a median of 4 items in a 50-wide window) most of a batch is such
        # padding. Positions keep their column numbers, so the result is that of encoding the whole window at once.
        first = self.first_item_columns(item_seq)
        order = torch.argsort(first, descending=True, stable=True)
        parts = []
        for rows in order.tensor_split(min(LENGTH_GROUPS, len(order))):
            start = int(first[rows].min())
            hidden = self.encode_columns(item_vectors[rows, start:], item_seq[rows, start:], start)
            parts.append(F.pad(hidden, (0, 0, start, 0)))
        return torch.cat(parts)[torch.argsort(order)]

    @staticmethod
    def first_item_columns(item_seq: torch.Tensor) -> torch.Tensor:
        """Each row's first column holding an item; the last column for a row of padding only."""
        occupied = item_seq > 0
        first = occupied.int().argmax(1)
        return torch.where(occupied.any(1), first, item_seq.size(1) - 1)

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
