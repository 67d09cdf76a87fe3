"""Token states → one vector per text.

`sentence`: the sentence-transformers model's own embedding (its pooling and normalisation modules).
`mean`: average of the last hidden layer over real tokens (attention mask), for encoders and decoders.
`last_token`: the hidden state of the last real token — a decoder's summary of the whole text (LLM2Vec-style
use of a causal LM as an encoder). Works with left or right padding.
`auto` picks `sentence` for sentence-transformers models and `mean` otherwise.
"""

from __future__ import annotations

from typing import Literal

import torch

from raylrec.errors import RaylrecError

Pooling = Literal["auto", "sentence", "mean", "last_token"]


def resolve_pooling(pooling: Pooling, family: str) -> Pooling:
    if pooling == "auto":
        return "sentence" if family == "sentence-transformers" else "mean"
    if pooling == "sentence" and family != "sentence-transformers":
        raise RaylrecError(
            f"pooling 'sentence' needs a sentence-transformers model; this one is a {family}: use mean or last_token"
        )
    return pooling


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, dim), (batch, seq) → (batch, dim): the mean over positions where the mask is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(batch, seq, dim), (batch, seq) → (batch, dim): the state at the last position where the mask is 1."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (attention_mask.to(torch.long) * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool_tokens(
    pooling: Literal["mean", "last_token"], hidden: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    return mean_pool(hidden, attention_mask) if pooling == "mean" else last_token_pool(hidden, attention_mask)
