"""A-LLMRec stage 1 (§4.1): align the frozen CF model's item embeddings E_i with SBERT text embeddings Q_i
through two autoencoders into a joint space, while SBERT is fine-tuned.

    e_i = f_I^enc(E_i),  q_i = f_T^enc(Q_i)
    L = MSE(e_i, q_i) + α·MSE(E_i, f_I^dec(e_i)) + β·MSE(Q_i, f_T^dec(q_i)) + L_rec        (eq. 2–6)
    L_rec = −log σ(x_u · f_I^dec(e_pos)) − log(1 − σ(x_u · f_I^dec(e_neg)))

x_u is the frozen backbone's user representation after the items before the positive. As the public code, the
text-reconstruction target Q_i is detached (SBERT is not pulled towards what the decoder can reproduce), and SBERT
trains in its own optimizer group at the paper's 1e-4 (`text.lr`). The stage runs on the shared Ray Train loop;
its artifact `joint_embeddings.safetensors` holds e (from E) and q (from text) for every item, `model.safetensors`
the trained encoders/decoders and the fine-tuned text encoder, and `diagnostics.json` the collapse diagnostics
(diagnostics.py), checked at export.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError, RaylrecError
from raylrec.methods.allmrec.config import Stage1Config, TextTowerConfig
from raylrec.methods.allmrec.diagnostics import collapse_problems, stage1_diagnostics
from raylrec.text.registry import resolve_model
from raylrec.text.templates import default_template, render_texts, template_fields
from raylrec.train.id_model import load_stage_model
from raylrec.train.losses import sample_negatives
from raylrec.train.recipe import Recipe, batched

JOINT_FILE = "joint_embeddings.safetensors"
DIAGNOSTICS_FILE = "diagnostics.json"
log = logging.getLogger(__name__)


class CollapseError(RaylrecError):
    """Stage 1's tables collapsed: the LLM would see every item as nearly the same soft token."""


def mlp(in_dim: int, out_dim: int, hidden: int | None) -> nn.Module:
    if hidden is None:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.Sigmoid(), nn.Linear(hidden, out_dim))


class TextTower(nn.Module):
    """A fine-tunable transformer encoder + pooling: token ids → one vector per text (SBERT's Q_i)."""

    def __init__(self, encoder: nn.Module, pooling: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def load_text_tower(config: TextTowerConfig, cache_root: str | Path | None = None) -> tuple[TextTower, object]:
    """The encoder behind a text-model spec as a plain transformers module (trainable), and its tokenizer.

    A sentence-transformers folder keeps its transformer as module 0 (usually at the folder root)."""
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_model(config.model, cache_root)
    path = resolved.path
    if resolved.family == "sentence-transformers":
        modules = json.loads((path / "modules.json").read_text())
        first = next(m for m in modules if m.get("idx", 0) == 0)
        path = path / first.get("path", "")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    encoder = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return TextTower(encoder, config.pooling), tokenizer


def item_texts(data: PreparedData, template: str | None) -> list[str]:
    """Text of every item (index = item, 0 = padding ""), through the dataset's default template if none given.
    An item whose every field is missing gets its display name (`item <raw id>`), never an empty text."""
    from raylrec.methods.allmrec.prompt import item_titles

    items = data.items_table()
    names = item_titles(data)
    if template is None:
        template = default_template(data.report.get("dataset") or "")
        if not set(template_fields(template)) <= set(items.columns):  # a dataset without text: names only
            return names
    rendered = render_texts(items, template)
    texts = [""] * (data.num_items + 1)
    for item, text in zip(rendered.items, rendered.texts):
        texts[item] = text if text.strip(" ;,") else names[item]
    return texts


class Stage1Model(nn.Module):
    def __init__(
        self,
        item_table: torch.Tensor,
        tower: TextTower,
        token_ids: torch.Tensor,
        token_mask: torch.Tensor,
        config: Stage1Config,
    ):
        super().__init__()
        d, dq, dj = item_table.shape[1], tower.dim, config.joint_dim
        self.num_items = item_table.shape[0] - 1
        self.config = config
        self.item_encoder = mlp(d, dj, config.hidden_dim)
        self.item_decoder = mlp(dj, d, config.hidden_dim)
        self.text_encoder = mlp(dq, dj, config.hidden_dim)
        self.text_decoder = mlp(dj, dq, config.hidden_dim)
        self.tower = tower
        # Frozen inputs rebuilt by build(): kept out of checkpoints.
        self.register_buffer("item_table", item_table.float(), persistent=False)
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.register_buffer("token_mask", token_mask, persistent=False)
        table = None
        if not config.text.finetune:  # the frozen encoder's Q table, computed once instead of every step
            tower.requires_grad_(False)
            with torch.no_grad():
                table = batched(self.encode_texts, torch.arange(item_table.shape[0]), 256)
        self.register_buffer("frozen_text", table, persistent=False)

    def encode_texts(self, items: torch.Tensor) -> torch.Tensor:
        mask = self.token_mask[items]
        width = max(int(mask.sum(1).max()), 1)
        return self.tower(self.token_ids[items][:, :width], mask[:, :width])

    def text_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """Q_i of the given items through the (fine-tuned) text encoder."""
        if self.frozen_text is not None:
            return self.frozen_text[items]
        return self.encode_texts(items)

    def loss_weights(self) -> dict[str, float]:
        on = self.config.losses
        return {
            "matching": float(on.matching),
            "item_recon": self.config.alpha * on.recon,
            "text_recon": self.config.beta * on.recon,
            "rec": float(on.rec),
        }

    def forward(
        self, user_vectors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every loss term of the batch (switched-off terms are computed too and weighted 0 by the caller, so
        every parameter takes part in each step, as DDP requires)."""
        e_items = self.item_table[positives]
        e = self.item_encoder(e_items)
        q_text = self.text_embeddings(positives)
        q = self.text_encoder(q_text)
        decoded_pos = self.item_decoder(e)
        decoded_neg = self.item_decoder(self.item_encoder(self.item_table[negatives]))
        pos_logit = (user_vectors * decoded_pos).sum(-1)
        neg_logit = (user_vectors * decoded_neg).sum(-1)
        return {
            "matching": F.mse_loss(e, q),
            "item_recon": F.mse_loss(decoded_pos, e_items),
            # detached target (the public code's `.data`): otherwise the cheapest way to reconstruct Q is for
            # SBERT to shrink Q to a point
            "text_recon": F.mse_loss(self.text_decoder(q), q_text.detach()),
            "rec": -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit)).mean(),
        }

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(weight * terms[name] for name, weight in self.loss_weights().items())

    @torch.no_grad()
    def joint_tables(self, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(e, q, Q): (num_items + 1, ·) joint embeddings from the item side and from the text side, and the text
        encoder's outputs; row 0 zeros."""
        items = torch.arange(1, self.num_items + 1, device=self.item_table.device)
        e = self.item_encoder(self.item_table[1:])
        text = batched(self.text_embeddings, items, batch_size)
        q = self.text_encoder(text)

        def pad(table: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.zeros(1, table.shape[1], device=table.device), table])

        return pad(e), pad(q), pad(text)


def backbone_tensors(backbone_dir: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(E, user representations) exported by a finished ID-model stage (see raylrec/train/id_model.py)."""
    files = [backbone_dir / "item_embeddings.safetensors", backbone_dir / "user_representations.safetensors"]
    for path in files:
        if not path.exists():
            raise ArtifactError(f"missing artifact {path}: train the backbone first")
    return load_file(str(files[0]))["item_embeddings"], load_file(str(files[1]))


class Stage1Recipe(Recipe):
    def __init__(self, name: str, config: Stage1Config, backbone_dir: str | Path, cache_root: str | None = None):
        self.name = name
        self.config = config
        self.backbone_dir = str(backbone_dir)
        self.cache_root = cache_root
        self._users: dict[str, torch.Tensor] | None = None

    def users(self) -> dict[str, torch.Tensor]:
        if self._users is None:
            self._users = backbone_tensors(Path(self.backbone_dir))[1]
        return self._users

    def build(self, data: PreparedData) -> Stage1Model:
        table, _ = backbone_tensors(Path(self.backbone_dir))
        if table.shape[0] != data.num_items + 1:
            raise ArtifactError(
                f"backbone at {self.backbone_dir} has {table.shape[0] - 1} items; data has {data.num_items}"
            )
        tower, tokenizer = load_text_tower(self.config.text, self.cache_root)
        tokens = tokenizer(
            item_texts(data, self.config.text.template),
            padding="max_length",
            truncation=True,
            max_length=self.config.text.max_length,
            return_tensors="pt",
        )
        return Stage1Model(table, tower, tokens["input_ids"], tokens["attention_mask"], self.config)

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        """(x_u, positive, items to avoid as negatives): one row per user (last training item), or one per
        training transition of every user's whole training sequence (A-LLMRec_all)."""
        if self.config.sequence_items == "last":
            users = self.users()
            hidden, inputs, targets = users["train_hidden"], users["train_inputs"], users["train_targets"]
            seen = torch.cat([inputs, targets[:, -1:]], dim=1)  # the user's last training window
            keep = targets[:, -1] > 0
            return hidden[keep, -1].contiguous(), targets[keep, -1].contiguous(), seen[keep].contiguous()
        # x_u before every training item: the frozen backbone over non-overlapping windows of the whole sequence
        backbone = load_stage_model(Path(self.backbone_dir))
        inputs, targets = (torch.from_numpy(a) for a in data.train_windows(backbone.config.max_len))
        with torch.no_grad():
            hidden = batched(backbone.encode, inputs)
        seen = torch.cat([inputs, targets[:, -1:]], dim=1)
        rows, cols = torch.nonzero(targets > 0, as_tuple=True)
        return hidden[rows, cols].contiguous(), targets[rows, cols].contiguous(), seen[rows].contiguous()

    def parameter_groups(self, core: Stage1Model) -> list[dict]:
        """The encoders/decoders at train.lr; the fine-tuned text encoder in its own group at text.lr."""
        tower = [p for p in core.tower.parameters() if p.requires_grad]
        ids = {id(p) for p in tower}
        rest = [p for p in core.parameters() if p.requires_grad and id(p) not in ids]
        return [{"params": rest}] + ([{"params": tower, "lr": self.config.text.lr}] if tower else [])

    def loss(self, model, core: Stage1Model, batch, generator):
        user_vectors, positives, seen = batch
        negatives = sample_negatives(positives.unsqueeze(1), seen, core.num_items, generator).squeeze(1)
        return core.total(model(user_vectors, positives, negatives))

    def scorer(self, core: Stage1Model, data, split, device):
        """x_u · f_I^dec(·) over all items, of q_i (`validation: text`) or of e_i (`item`): how much of the
        backbone's collaborative signal the text side (or the item autoencoder) keeps."""
        vectors = self.users()[split]
        decoded: list[torch.Tensor] = []  # built on the first batch: all items' q once per validation

        def score(users: np.ndarray) -> torch.Tensor:
            if not decoded:
                if self.config.validation == "text":
                    joint = core.text_encoder(
                        batched(
                            core.text_embeddings,
                            torch.arange(core.item_table.shape[0], device=core.item_table.device),
                            256,
                        )
                    )
                else:
                    joint = core.item_encoder(core.item_table)
                decoded.append(core.item_decoder(joint))
            logits = vectors[torch.from_numpy(users)].to(device) @ decoded[0].T
            logits[:, 0] = float("-inf")
            return logits

        return score

    def export(self, core: Stage1Model, data: PreparedData, out: Path) -> dict:
        """The joint tables, and the collapse diagnostics — an error (or a carried warning) when they collapsed."""
        e, q, text = core.joint_tables()
        diagnostics = stage1_diagnostics(text[1:], e[1:], q[1:])
        problems, other = collapse_problems(diagnostics, self.config.collapse)
        (out / DIAGNOSTICS_FILE).write_text(json.dumps({**diagnostics, "collapse": problems + other}, indent=2))
        for problem in other:
            log.warning("A-LLMRec stage 1 (%s): %s (not a checked table: kept)", out, problem)
        if problems:
            message = (
                f"A-LLMRec stage 1 ({out}) collapsed: {'; '.join(problems)}. Every item would reach the LLM "
                f"as nearly the same soft token. Lower stage1.text.lr (now {self.config.text.lr}) or "
                "stage1.train.lr, or freeze the text encoder (stage1.text.finetune: false); "
                "stage1.collapse.action: warn keeps the tables anyway"
            )
            if self.config.collapse.action == "error":
                raise CollapseError(message)
            log.warning(message)
        save_file({"e": e.contiguous(), "q": q.contiguous()}, out / JOINT_FILE)
        mismatch = float(F.mse_loss(e[1:], q[1:]))
        return {
            "joint_dim": int(e.shape[1]),
            "text_dim": core.tower.dim,
            "item_dim": int(core.item_table.shape[1]),
            "mse_e_q": mismatch,
            "backbone": self.backbone_dir,
            "diagnostics": diagnostics,
            "warnings": [f"stage 1 collapsed: {p}" for p in problems + other],
        }

    def config_dump(self) -> dict:
        return self.config.model_dump(mode="json")


def load_joint_embeddings(stage1_dir: Path) -> dict[str, torch.Tensor]:
    path = Path(stage1_dir) / JOINT_FILE
    if not path.exists():
        raise ArtifactError(f"missing artifact {path}: run A-LLMRec stage 1 first")
    return load_file(str(path))
