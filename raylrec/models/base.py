"""The small interface every ID-based sequential recommender implements, and the model registry.

Sequences are left-padded item indices (0 = padding, items are 1..num_items), so the most recent
item is always the last column and a user's representation is the hidden state at position -1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from raylrec.config import StrictModel


class ModelConfig(StrictModel):
    name: Literal["sasrec", "gru4rec"] = "sasrec"
    hidden_size: int = 64
    max_len: int = 50
    num_layers: int = 2
    num_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.5
    attn_dropout: float = 0.5  # SASRec: attention weights and both residual branches (RecBole's two dropouts at 0.5)
    # SASRec: inside the feed-forward, between its two layers. None: attn_dropout, as torch's encoder layer and
    # the SASRec authors' code; RecBole's SASRec has none there (0).
    ffn_dropout: float | None = None
    # SASRec: layer norm before each attention / feed-forward sub-layer and once after the last block, as the SASRec
    # authors' code; False: after each sub-layer's residual sum, as RecBole's SASRec.
    norm_first: bool = False


class SequentialRecommender(nn.Module):
    """Encode a sequence into per-position hidden states; score items by dot product with the item table."""

    def __init__(self, num_items: int, config: ModelConfig):
        super().__init__()
        self.num_items = num_items
        self.config = config
        self.item_embedding = nn.Embedding(num_items + 1, config.hidden_size, padding_idx=0)

    def encode(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) item indices → (B, L, d) hidden states; position t summarises items ≤ t."""
        return self.encode_embeddings(self.item_embedding(item_seq), item_seq)

    def encode_embeddings(self, item_vectors: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        """Like `encode`, from (B, L, d) item vectors supplied by the caller (e.g. text-based item towers);
        `item_seq` still marks which positions are padding (0)."""
        raise NotImplementedError

    def user_vector(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, d): the representation used to predict the next item."""
        return self.encode(item_seq)[:, -1]

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, d) item embeddings, row 0 = padding."""
        return self.item_embedding.weight

    def score_all(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) → (..., num_items + 1) logits; the padding column is -inf."""
        logits = hidden @ self.item_table().T
        logits[..., 0] = float("-inf")
        return logits

    def forward(self, item_seq: torch.Tensor) -> torch.Tensor:
        return self.encode(item_seq)


MODEL_REGISTRY: dict[str, Callable[[int, ModelConfig], SequentialRecommender]] = {}


def register_model(name: str):
    def decorate(cls):
        MODEL_REGISTRY[name] = cls
        return cls

    return decorate
