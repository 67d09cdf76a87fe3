"""A loaded text model plus a pooling: texts in, float32 vectors out.

The same class runs in a plain loop (benchmark, tests) and inside each Ray Data actor.
"""

from __future__ import annotations

import numpy as np
import torch

from raylrec.config import StrictModel
from raylrec.text.pooling import Pooling, pool_tokens, resolve_pooling
from raylrec.text.registry import LoadedTextModel


class TextModelConfig(StrictModel):
    """Everything that changes the vectors; all of it is part of the embeddings' cache key."""

    model: str = "minilm"  # packaged short name, local folder or Hugging Face id
    pooling: Pooling = "auto"
    normalize: bool = False  # L2-normalise the pooled vectors
    max_length: int = 128  # tokens per text; longer texts are truncated
    template: str | None = None  # None: the dataset's default template


class TextEncoder:
    def __init__(
        self, loaded: LoadedTextModel, pooling: Pooling = "auto", normalize: bool = False, max_length: int = 128
    ):
        self.loaded = loaded
        self.pooling = resolve_pooling(pooling, loaded.resolved.family)
        self.normalize = normalize
        self.max_length = max_length
        self.device = next(loaded.model.parameters()).device
        if loaded.resolved.family == "sentence-transformers":
            loaded.model.max_seq_length = max_length

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        if self.loaded.resolved.family == "sentence-transformers":
            features = self.loaded.model.preprocess(texts)
            features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            output = self.loaded.model(features)
            vectors = (
                output["sentence_embedding"]
                if self.pooling == "sentence"
                else pool_tokens(self.pooling, output["token_embeddings"], features["attention_mask"])
            )
        else:
            batch = self.loaded.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            # input ids and mask only: encoders default token types to 0, and decoders take none.
            mask = batch["attention_mask"]
            hidden = self.loaded.model(input_ids=batch["input_ids"], attention_mask=mask).last_hidden_state
            vectors = pool_tokens(self.pooling, hidden, mask)
        if self.normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors.float().cpu().numpy()
