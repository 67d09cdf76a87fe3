"""IDLE-Adapter as a recipe of the shared Ray Train loop: samples of eq. 13, loss of eq. 15, full-ranking scores.

Training samples are the prefixes of each user's training sequence with the next item as target (eq. 13):
the frozen ID model sees the prefix's last `max_len` items (u, eq. 2), the language model sees the hard prompt
built from the same prefix. Scoring a split uses the history before the split's target in the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from raylrec.data.prepared import PreparedData, left_pad_tails
from raylrec.methods.idle.config import IdleConfig
from raylrec.methods.idle.head import encode_item_texts
from raylrec.methods.idle.injection import load_backbone
from raylrec.methods.idle.mmd import layerwise_mmd
from raylrec.methods.idle.model import IdleModel
from raylrec.methods.idle.prompt import PromptBuilder
from raylrec.train.id_model import load_stage_model
from raylrec.train.recipe import Recipe


def subsequence_cuts(lengths: np.ndarray, per_user: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(user, k) pairs: predict item k of the user's training sequence from items [0, k), k ≥ 1; only the
    `per_user` largest k of each user when given (the most recent sub-sequences)."""
    users, cuts = [], []
    for user, length in enumerate(lengths):
        first = 1 if per_user is None else max(1, int(length) - per_user)
        ks = np.arange(first, int(length))
        users.append(np.full(len(ks), user))
        cuts.append(ks)
    return np.concatenate(users).astype(np.int64), np.concatenate(cuts).astype(np.int64)


def trim(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the padding columns every row of the batch has (prompts are right-padded to the budget)."""
    width = int(attention_mask.sum(1).max().clamp(min=1))
    return input_ids[:, :width], attention_mask[:, :width]


def hidden_rows(
    hidden: torch.Tensor, attention_mask: torch.Tensor, max_rows: int, generator: torch.Generator
) -> torch.Tensor:
    """The real-token rows of (B, T, d') hidden states, without position 0 ([CLS] / the decoders' attention-sink
    first token, whose huge norm would dominate the kernel), at most `max_rows` at random."""
    keep = attention_mask.bool().clone()
    keep[:, 0] = False
    rows = hidden[keep]
    if len(rows) > max_rows:
        rows = rows[torch.randperm(len(rows), generator=generator, device=generator.device)[:max_rows].to(rows.device)]
    return rows


def exclude_seen(logits: torch.Tensor, windows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, M+1) logits with the items of each (B, max_len) window (and padding) at −∞, the target kept."""
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, windows, True)
    seen[torch.arange(len(targets), device=targets.device), targets] = False
    return logits.masked_fill(seen, float("-inf"))


class IdleRecipe(Recipe):
    def __init__(self, config: IdleConfig, id_model_dir: str | Path, backbone_path: str | Path, family: str):
        self.config = config
        self.name = config.name
        self.id_model_dir = str(id_model_dir)
        self.backbone_path = str(backbone_path)
        self.family = family
        self._cache: dict = {}

    def backbone_stage(self) -> str:
        return Path(self.id_model_dir).name

    def __getstate__(self):  # caches (tokenizer, prompts) are rebuilt in each process
        return {**self.__dict__, "_cache": {}}

    def build(self, data: PreparedData) -> IdleModel:
        backbone, tokenizer = load_backbone(
            self.backbone_path,
            self.family,
            self.config.pooling,
            self.config.adapter.injection,
            self.config.attn_implementation,
        )
        self._cache["tokenizer"] = tokenizer
        id_model = load_stage_model(Path(self.id_model_dir))
        self._cache["max_len"] = id_model.config.max_len
        head = self.config.head
        text_rows = None
        if head.init == "text":
            text_rows = encode_item_texts(
                backbone, tokenizer, self.prompts(data).texts, self.config.prompt.max_tokens, head.batch_items
            )
        return IdleModel(backbone, id_model, data.num_items, self.config.adapter, head, text_rows)

    def prompts(self, data: PreparedData) -> PromptBuilder:
        if "prompts" not in self._cache:
            if "tokenizer" not in self._cache:
                from transformers import AutoTokenizer

                from raylrec.methods.idle.injection import transformer_folder

                tokenizer = AutoTokenizer.from_pretrained(
                    transformer_folder(Path(self.backbone_path)), local_files_only=True
                )
                tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
                self._cache["tokenizer"] = tokenizer
            self._cache["prompts"] = PromptBuilder(
                self._cache["tokenizer"],
                data.items_table(),
                data.num_items,
                self.config.prompt,
                data.report.get("config", {}).get("dataset", self.config.data.dataset),
            )
        return self._cache["prompts"]

    def max_len(self) -> int:
        if "max_len" not in self._cache:
            self._cache["max_len"] = json.loads((Path(self.id_model_dir) / "model_config.json").read_text())["max_len"]
        return self._cache["max_len"]

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        history = data.history("train")
        users, cuts = subsequence_cuts(history.lengths, self.config.subsequences_per_user)
        rows = [history.row(u)[:k] for u, k in zip(users, cuts)]
        targets = np.array([history.row(u)[k] for u, k in zip(users, cuts)], dtype=np.int64)
        max_len = self.max_len()
        windows = np.zeros((len(rows), max_len), dtype=np.int64)
        for i, row in enumerate(rows):
            tail = row[-max_len:]
            windows[i, max_len - len(tail) :] = tail
        input_ids, mask = self.prompts(data).batch(rows)
        return (
            torch.from_numpy(windows),
            torch.from_numpy(input_ids),
            torch.from_numpy(mask),
            torch.from_numpy(targets),
        )

    def loss(self, model, core: IdleModel, batch, generator):
        windows, input_ids, attention_mask, targets = batch
        input_ids, attention_mask = trim(input_ids, attention_mask)
        logits, refined = model(windows, input_ids, attention_mask)
        if self.config.loss_excludes_history:
            logits = exclude_seen(logits, windows, targets)
        loss = F.cross_entropy(logits, targets)  # eq. 13
        settings = self.config.mmd
        if settings.weight > 0:  # eq. 12, 15
            k = min(settings.samples_per_batch, len(targets))
            ids, mask = trim(input_ids[:k], attention_mask[:k])
            hidden = [hidden_rows(h, mask, settings.max_rows, generator) for h in core.frozen_hidden_states(ids, mask)]
            loss = loss + settings.weight * layerwise_mmd(refined, hidden, settings.rho)
        return loss

    def scorer(self, core: IdleModel, data, split, device):
        history = data.history(split)
        prompts = self.prompts(data)
        max_len = self.max_len()

        def score(users: np.ndarray) -> torch.Tensor:
            parts = []
            for start in range(0, len(users), 64):
                chunk = users[start : start + 64]
                windows = torch.from_numpy(left_pad_tails(history, chunk, max_len)).to(device)
                ids, mask = prompts.batch([history.row(u) for u in chunk])
                ids, mask = trim(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
                parts.append(core.score(windows, ids, mask))
            return torch.cat(parts)

        return score

    @torch.no_grad()
    def export(self, core: IdleModel, data: PreparedData, out: Path) -> dict:
        """The adapter's settings, and its mean gate value per layer on the test prompts (how much of D^(l)
        comes from the learned prefix C rather than the user projection P)."""
        backbone = core.backbone
        facts = {
            "backbone": self.config.backbone,
            "backbone_kind": backbone.kind,
            "pooling": backbone.pooling,
            "layers": backbone.num_layers,
            "hidden": backbone.hidden_size,
            "frozen_backbone_params": sum(p.numel() for p in backbone.parameters()),
            "id_model_dir": self.id_model_dir,
        }
        if core.config.refinement:
            users = np.arange(min(256, data.num_users))
            windows = torch.from_numpy(left_pad_tails(data.history("test"), users, self.max_len()))
            _, gate, _ = core.adapter(core.user_vectors(windows))
            facts["mean_gate_per_layer"] = [round(v, 4) for v in gate.mean(dim=(1, 2)).tolist()]
        facts["head_init"] = core.head.config.init
        if core.head.config.id_residual:  # how much the LLM path and the ID logits weigh after training
            facts["head_gain"] = round(float(core.head.gain), 4)
            facts["id_temperature"] = round(float(core.head.log_temperature.exp()), 4)
        (out / "idle_config.json").write_text(
            json.dumps({**facts, "config": self.config.model_dump(mode="json")}, indent=2)
        )
        return facts

    def config_dump(self) -> dict:
        return {
            "method": "idle",
            **self.config.model_dump(mode="json"),
            "id_model_dir": self.id_model_dir,
            "backbone_path": self.backbone_path,
        }
