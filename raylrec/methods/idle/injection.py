"""Eq. 8–11: the refined user representation D^(l) joins layer l's keys and values; queries stay the prompt's.

Both backbone kinds take the virtual tokens through the per-layer key/value cache (`DynamicCache`) of
transformers 5.x: every layer's self-attention concatenates the cached keys/values before its own, which is
exactly K = W_k Concat(D, H), V = W_v Concat(D, H) with Q = W_q H. Verified here (tests/test_idle.py) against
running the virtual tokens as real tokens, for BERT-family encoders and Llama-family decoders, eager and sdpa.

`kv` injection treats D^(l) as hidden states entering layer l: the layer's own frozen pre-attention norm
(decoders), key/value projections, key norm (Qwen3-style, if any) and rotary embedding at positions 0..L'-1, so
the prompt sits at positions L'..L'+T-1 as if the virtual tokens preceded it. Encoders (absolute position
embeddings) keep the prompt at positions 0..T-1: virtual tokens carry no position, like prefix tuning.
`ptuning_v2` injection takes keys and values from the adapter's own linear map (no norm, no rotary).
The attention mask always covers the L' virtual tokens (never masked) plus the prompt's tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from raylrec.errors import RaylrecError

BackboneKind = Literal["encoder", "decoder"]
LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3", "smollm3", "olmo2"}


@dataclass
class Prefix:
    """Per-layer key/value tensors, each (B, kv_heads, L', head_dim)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].size(2) if self.keys else 0

    def cache(self):
        from transformers import DynamicCache

        # A fresh cache every call: the forward appends the prompt's keys/values to it.
        return DynamicCache(ddp_cache_data=list(zip(self.keys, self.values)))


class Backbone(nn.Module):
    """A frozen transformer (no LM head) with per-layer key/value prefixes. Subclasses know its layer internals."""

    kind: BackboneKind

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.pooling = pooling
        config = model.config
        self.num_layers = config.num_hidden_layers
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or self.hidden_size // self.num_heads

    def train(self, mode: bool = True):  # frozen: dropout stays off
        return super().train(False)

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, kv_heads·head_dim) → (B, kv_heads, P, head_dim)."""
        return x.view(*x.shape[:2], -1, self.head_dim).transpose(1, 2)

    def layer_key_values(self, layer: int, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values layer `layer` computes from (B, P, d') hidden states at prefix positions 0..P-1."""
        raise NotImplementedError

    def prefix_from_states(self, refined: torch.Tensor) -> Prefix:
        """`kv` injection: D (num_layers, B, L', d') → per-layer keys/values through the frozen layers."""
        pairs = [self.layer_key_values(layer, refined[layer]) for layer in range(self.num_layers)]
        return Prefix([k for k, _ in pairs], [v for _, v in pairs])

    def prefix_from_key_values(self, key_values: torch.Tensor) -> Prefix:
        """`ptuning_v2` injection: (num_layers, B, L', 2·kv_dim) → per-layer keys/values."""
        keys, values = key_values.split(self.kv_dim, dim=-1)
        return Prefix([self.split_heads(k) for k in keys], [self.split_heads(v) for v in values])

    def prompt_positions(self, prefix_length: int, length: int, device) -> torch.Tensor | None:
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prefix: Prefix | None = None,
        output_hidden_states: bool = False,
        position_ids: torch.Tensor | None = None,
    ):
        """The prompt through the model, with the virtual tokens in every layer when `prefix` is given."""
        length = prefix.length if prefix is not None else 0
        kwargs = {}
        if length:
            ones = torch.ones(attention_mask.size(0), length, dtype=attention_mask.dtype, device=attention_mask.device)
            attention_mask = torch.cat([ones, attention_mask], dim=1)
            kwargs["cache"] = prefix.cache()
        if position_ids is None:
            position_ids = self.prompt_positions(length, input_ids.size(1), input_ids.device)
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            use_cache=False if not length else None,
            **kwargs,
        )

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Eq. 14's H^(L): (B, T, d') → (B, d') by [CLS], masked mean, or the last real token (right padding)."""
        if self.pooling == "cls":
            return last_hidden[:, 0]
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
            return (last_hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.pooling == "last":
            last = attention_mask.sum(1).clamp(min=1) - 1
            return last_hidden[torch.arange(len(last), device=last.device), last]
        raise ValueError(f"unknown pooling {self.pooling!r}")


class EncoderBackbone(Backbone):
    """BERT-family encoders (BERT, RoBERTa, XLM-R, ELECTRA, BGE, MiniLM): post-LN layers, absolute positions."""

    kind = "encoder"

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__(model, pooling)
        try:
            self.layers = list(model.encoder.layer)
            _ = [(layer.attention.self.key, layer.attention.self.value) for layer in self.layers]
        except AttributeError:
            raise RaylrecError(
                f"{type(model).__name__} is not a BERT-family encoder (encoder.layer[i].attention."
                "self.key/value); use adapter.injection=ptuning_v2 or a BERT-family model"
            ) from None

    def layer_key_values(self, layer, states):
        attention = self.layers[layer].attention.self
        return self.split_heads(attention.key(states)), self.split_heads(attention.value(states))

    def prompt_positions(self, prefix_length, length, device):
        # Without explicit positions BERT would start the prompt at the cache length; keep it at 0..T-1.
        return torch.arange(length, device=device).unsqueeze(0)


class DecoderBackbone(Backbone):
    """Llama-family causal decoders (Llama/SmolLM2, Mistral, Qwen2/3): pre-norm layers, rotary positions."""

    kind = "decoder"

    def __init__(self, model: nn.Module, pooling: str):
        super().__init__(model, pooling)
        if model.config.model_type not in LLAMA_LIKE or not hasattr(model, "rotary_emb"):
            raise RaylrecError(
                f"kv injection supports Llama-family decoders ({', '.join(sorted(LLAMA_LIKE))}), not "
                f"{model.config.model_type!r}; use adapter.injection=ptuning_v2"
            )
        self.layers = list(model.layers)

    def layer_key_values(self, layer, states):
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        block = self.layers[layer]
        attention = block.self_attn
        normed = block.input_layernorm(states)
        keys, values = self.split_heads(attention.k_proj(normed)), self.split_heads(attention.v_proj(normed))
        if getattr(attention, "k_norm", None) is not None:  # Qwen3-style per-head key norm (before rotary)
            keys = attention.k_norm(keys.transpose(1, 2)).transpose(1, 2)
        positions = torch.arange(states.size(1), device=states.device).unsqueeze(0)
        cos, sin = self.model.rotary_emb(normed, positions)
        _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
        return keys, values

    def prompt_positions(self, prefix_length, length, device):
        return None  # the model continues after the cache: positions L'..L'+T-1


class GenericBackbone(Backbone):
    """Any model that accepts a key/value cache; only the P-tuning-v2 injection (no layer internals needed)."""

    def __init__(self, model: nn.Module, pooling: str, kind: BackboneKind):
        super().__init__(model, pooling)
        self.kind = kind

    def layer_key_values(self, layer, states):
        raise RaylrecError(
            f"kv injection is not implemented for {self.model.config.model_type!r}; use adapter.injection=ptuning_v2"
        )

    def prompt_positions(self, prefix_length, length, device):
        return torch.arange(length, device=device).unsqueeze(0) if self.kind == "encoder" else None


def wrap_backbone(model: nn.Module, kind: BackboneKind, pooling: str, injection: str) -> Backbone:
    if pooling == "auto":
        pooling = "last" if kind == "decoder" else "cls"
    if kind == "encoder" and pooling == "last":
        raise RaylrecError("pooling=last is for decoders (an encoder's last token is [SEP] or padding)")
    if (
        injection == "ptuning_v2"
        and not (kind == "encoder" and hasattr(model, "encoder"))
        and not (kind == "decoder" and model.config.model_type in LLAMA_LIKE)
    ):
        return GenericBackbone(model, pooling, kind)
    return EncoderBackbone(model, pooling) if kind == "encoder" else DecoderBackbone(model, pooling)


def sentence_transformers_pooling(path: Path) -> str | None:
    """The pooling an SBERT folder declares (mean for all-MiniLM-L6-v2), if it is cls or mean."""
    modules = path / "modules.json"
    if not modules.exists():
        return None
    for module in json.loads(modules.read_text()):
        if module.get("type", "").endswith("Pooling"):
            settings = json.loads((path / module["path"] / "config.json").read_text())
            if settings.get("pooling_mode_cls_token"):
                return "cls"
            if settings.get("pooling_mode_mean_tokens"):
                return "mean"
    return None


def transformer_folder(path: Path) -> Path:
    """An SBERT folder's Transformer module (usually the folder itself); any other folder as is."""
    modules = path / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text()):
            if module.get("type", "").endswith("Transformer"):
                return path / module.get("path", "")
    return path


def load_backbone(
    path: str | Path, family: str, pooling: str, injection: str, attn_implementation: str = "sdpa"
) -> tuple[Backbone, object]:
    """(frozen backbone, tokenizer) from a resolved local model folder (raylrec.text.registry.resolve_model)."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    kind: BackboneKind = "decoder" if family == "decoder" else "encoder"
    if pooling == "auto" and family == "sentence-transformers":
        pooling = sentence_transformers_pooling(path) or "cls"
    folder = transformer_folder(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModel.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32, attn_implementation=attn_implementation
    )
    return wrap_backbone(model, kind, pooling, injection), tokenizer
