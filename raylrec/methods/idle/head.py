"""Eq. 14's item head, ŷ = softmax(W_yᵀ H^(L)), with our extensions of how W_y starts and what it adds to
(docs/idle.md; config in `HeadConfig`):

- `random` (the paper): W_y ∈ R^{(M+1)×d'} from a truncated normal.
- `id_tied`: W_y = A·Iᵀ, the frozen ID model's item table I ∈ R^{(M+1)×d} through a learned map A ∈ R^{d'×d};
  only A trains (I stays the ID model's, read at every call so it is never saved twice).
- `text`: W_y's rows start as the frozen language model's own pooled embedding of each item's text.
- `id_residual`: logits = gain · head(h) + τ · u·Iᵀ, the frozen ID model's logits with a learned temperature τ
  (starts at 1) and a learned gain on the head's logits (starts at 0), so that before the first step the scores
  are exactly the ID model's whatever the head's start.
"""

from __future__ import annotations

import torch
from torch import nn

from raylrec.methods.idle.adapter import truncated_normal
from raylrec.methods.idle.config import HeadConfig


class ItemHead(nn.Module):
    def __init__(
        self,
        hidden: int,
        num_items: int,
        id_dim: int,
        config: HeadConfig,
        init_std: float,
        text_rows: torch.Tensor | None = None,
    ):
        super().__init__()
        self.config = config
        rows = num_items + 1  # row 0 = padding, as the ID models' tables
        if config.init == "id_tied":
            self.id_map = truncated_normal((hidden, id_dim), init_std)  # A
        elif config.init == "text":
            if text_rows is None or tuple(text_rows.shape) != (rows, hidden):
                raise ValueError(
                    f"head.init=text needs ({rows}, {hidden}) item text embeddings, got "
                    f"{None if text_rows is None else tuple(text_rows.shape)}"
                )
            self.weight = nn.Parameter(text_rows.detach().clone().float())
        else:
            self.weight = truncated_normal((rows, hidden), init_std)
        self.bias = nn.Parameter(torch.zeros(rows)) if config.bias else None
        if config.id_residual:
            # Shape (1,), not a 0-d scalar: DeepSpeed's start-up broadcast (decoder backbones) cannot send 0-d tensors.
            self.gain = nn.Parameter(torch.zeros(1))
            self.log_temperature = nn.Parameter(torch.zeros(1))
            self._register_load_state_dict_pre_hook(self._scalars_as_vectors)

    @staticmethod
    def _scalars_as_vectors(state_dict, prefix, *args) -> None:
        """Stages saved before the scalars were (1,)-shaped still load."""
        for name in ("gain", "log_temperature"):
            key = prefix + name
            if key in state_dict and state_dict[key].dim() == 0:
                state_dict[key] = state_dict[key].reshape(1)

    def forward(self, pooled: torch.Tensor, id_items: torch.Tensor, id_logits: torch.Tensor | None) -> torch.Tensor:
        """(B, d') pooled LLM states → (B, M+1) logits. `id_items` is the ID model's (M+1, d) item table,
        `id_logits` its (B, M+1) logits u·Iᵀ (needed with id_residual)."""
        if self.config.init == "id_tied":
            logits = (pooled @ self.id_map) @ id_items.T
        else:
            logits = pooled @ self.weight.T
        if self.bias is not None:
            logits = logits + self.bias
        if self.config.id_residual:
            logits = self.gain * logits + self.log_temperature.exp() * id_logits
        return logits


@torch.no_grad()
def encode_item_texts(backbone, tokenizer, texts: list[str], max_tokens: int, batch_size: int) -> torch.Tensor:
    """(len(texts), d') the frozen language model's own pooled embedding of each text (no virtual tokens), with
    the pooling the head's input uses; empty texts (padding row 0, items without text) get zeros."""
    rows = torch.zeros(len(texts), backbone.hidden_size)
    present = [i for i, text in enumerate(texts) if text]
    for start in range(0, len(present), batch_size):
        chunk = present[start : start + batch_size]
        encoded = tokenizer(
            [texts[i] for i in chunk], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt"
        )
        output = backbone(encoded["input_ids"], encoded["attention_mask"], None)
        rows[chunk] = backbone.pool(output.last_hidden_state, encoded["attention_mask"]).float()
    return rows
