"""Experts as PAD builds them: an item tower (item index → vector) feeding a sequence encoder.

Item towers: the collaborative ID table, the text tower f_MLP over frozen text embeddings (eq. 7), and the
alignment expert's fusion of both. The encoder is an ID backbone (SASRec, GRU4Rec, …) without its own item
table, so each expert keeps its own embedding tables (two per modality across the experts, as the paper).
"""

from __future__ import annotations

import torch
from torch import nn

from raylrec.methods.pad.config import TowerConfig
from raylrec.models import build_model
from raylrec.models.base import ModelConfig, SequentialRecommender

ITEM_TABLE_KEY = "item_embedding.weight"  # the ID backbones' item table in their state dict


def init_table(table: nn.Embedding) -> nn.Embedding:
    nn.init.normal_(table.weight, std=0.02)  # as SASRec's own initialisation
    with torch.no_grad():
        table.weight[0].zero_()
    return table


def prepare_text(vectors: torch.Tensor, standardize: bool) -> torch.Tensor:
    """Frozen text table (num_items + 1, D); with `standardize`, each dimension z-scored over the real items."""
    vectors = vectors.float().clone()
    if standardize:
        items = vectors[1:]
        vectors[1:] = (items - items.mean(0)) / items.std(0).clamp(min=1e-6)
    vectors[0] = 0
    return vectors


class IDTower(nn.Module):
    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.embedding = init_table(nn.Embedding(num_items + 1, dim, padding_idx=0))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.embedding(items)


class TextTower(nn.Module):
    """f_MLP(SG(text)): the text table is a non-trainable buffer (not saved: it is reloaded from its artifact)."""

    def __init__(self, text: torch.Tensor, dim: int, config: TowerConfig):
        super().__init__()
        self.register_buffer("text", text, persistent=False)
        layers: list[nn.Module] = [nn.Linear(text.size(1), dim)]
        for _ in range(config.text_mlp_layers - 1):
            layers += [nn.GELU(), nn.Dropout(config.dropout), nn.Linear(dim, dim)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.text[items])


class FusedTower(nn.Module):
    """The alignment expert's items: aligned text and collaborative vector, concatenated then projected, or added."""

    def __init__(self, num_items: int, text: torch.Tensor, dim: int, config: TowerConfig):
        super().__init__()
        self.collaborative = IDTower(num_items, dim)
        self.text = TextTower(text, dim, config)
        self.fuse = nn.Linear(2 * dim, dim) if config.fuse == "cat" else None
        self.fuse_init = config.fuse_init
        self.init_fusion()

    @torch.no_grad()
    def init_fusion(self) -> None:
        """Set the `cat` fusion's start (call again once the collaborative table is loaded: `balanced` scales by it).

        id: [0 | I] — the collaborative vector alone, so a phase-1 table keeps its ranking at step 0 (the public
        code starts from a random projection). balanced: [a·I | I/√2] with a = rms(ID) / (√2 · rms(text tower)),
        so the text and ID halves enter with equal size and the output keeps the ID table's size."""
        if self.fuse is None:
            return
        dim = self.fuse.out_features
        identity = torch.eye(dim)
        self.fuse.weight.zero_()
        self.fuse.bias.zero_()
        if self.fuse_init == "id":
            self.fuse.weight[:, dim:].copy_(identity)
            return
        was_training = self.training
        self.eval()  # no dropout in the measurement
        rms_id = self.collaborative.embedding.weight[1:].pow(2).mean().sqrt()
        rms_text = self.text.mlp(self.text.text[1:]).pow(2).mean().sqrt().clamp(min=1e-8)
        self.train(was_training)
        self.fuse.weight[:, :dim].copy_(identity * rms_id / (rms_text * 2**0.5))
        self.fuse.weight[:, dim:].copy_(identity / 2**0.5)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        text, collaborative = self.text(items), self.collaborative(items)
        return self.fuse(torch.cat([text, collaborative], -1)) if self.fuse is not None else text + collaborative


def headless_backbone(num_items: int, config: ModelConfig) -> SequentialRecommender:
    """An ID backbone whose item vectors come from outside (`encode_embeddings`): its own table is dropped."""
    backbone = build_model(num_items, config)
    backbone.item_embedding = None
    return backbone


class Expert(nn.Module):
    """An item tower plus a sequence encoder; scores are dot products of user states and item vectors."""

    def __init__(self, tower: nn.Module, encoder: SequentialRecommender):
        super().__init__()
        self.tower = tower
        self.encoder = encoder

    def user_states(self, item_seq: torch.Tensor) -> torch.Tensor:
        """(B, L) → (B, L, d)."""
        return self.encoder.encode_embeddings(self.tower(item_seq), item_seq)

    def item_table(self) -> torch.Tensor:
        """(num_items + 1, d) vectors of every item (row 0 = padding)."""
        return self.tower(torch.arange(self.num_items + 1, device=self.device))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_items(self) -> int:
        return self.encoder.num_items


def split_backbone_state(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An ID backbone's state → (its item table, the rest = the encoder's state)."""
    return state[ITEM_TABLE_KEY], {k: v for k, v in state.items() if k != ITEM_TABLE_KEY}


def id_expert(num_items: int, model: ModelConfig) -> Expert:
    return Expert(IDTower(num_items, model.hidden_size), headless_backbone(num_items, model))


def text_expert(num_items: int, text: torch.Tensor, model: ModelConfig, towers: TowerConfig) -> Expert:
    """The LLM-specific expert, and MoRec: items are MLP-reduced text embeddings only."""
    return Expert(TextTower(text, model.hidden_size, towers), headless_backbone(num_items, model))


def alignment_expert(num_items: int, text: torch.Tensor, model: ModelConfig, towers: TowerConfig) -> Expert:
    """The alignment expert, and Hybrid: items fuse text and collaborative embeddings."""
    return Expert(FusedTower(num_items, text, model.hidden_size, towers), headless_backbone(num_items, model))


def expert_scores(expert: Expert, item_seq: torch.Tensor) -> torch.Tensor:
    """(B, L) → (B, num_items + 1) scores of every item for the state at the last position."""
    return expert.user_states(item_seq)[:, -1] @ expert.item_table().T
