"""GRU4Rec (Hidasi et al., 2016) in its sequential form (Tan et al., 2016): a GRU over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from raylrec.models.base import ModelConfig, SequentialRecommender, register_model


@register_model("gru4rec")
class GRU4Rec(SequentialRecommender):
    def __init__(self, num_items: int, config: ModelConfig):
        super().__init__(num_items, config)
        d = config.hidden_size
        self.input_dropout = nn.Dropout(config.dropout)
        self.gru = nn.GRU(d, config.inner_size, num_layers=config.num_layers, batch_first=True)
        self.output = nn.Linear(config.inner_size, d)
        nn.init.xavier_normal_(self.item_embedding.weight)

    def encode_embeddings(self, item_vectors: torch.Tensor, item_seq: torch.Tensor) -> torch.Tensor:
        # The GRU must start at each sequence's first real item, so left padding is moved to the right
        # for the recurrence (packed) and the outputs are moved back.
        batch, length = item_seq.shape
        lengths = (item_seq > 0).sum(1)
        shift = (length - lengths).unsqueeze(1)
        columns = torch.arange(length, device=item_seq.device).unsqueeze(0)
        right_index = (columns + shift) % length
        right_vectors = item_vectors.gather(1, right_index.unsqueeze(-1).expand(-1, -1, item_vectors.size(-1)))
        embedded = self.input_dropout(right_vectors)
        packed = nn.utils.rnn.pack_padded_sequence(
            embedded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=length)
        hidden = self.output(out)
        left_index = (columns - shift) % length
        hidden = hidden.gather(1, left_index.unsqueeze(-1).expand(-1, -1, hidden.size(-1)))
        return hidden * (item_seq > 0).unsqueeze(-1)
