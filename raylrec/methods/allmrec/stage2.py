"""A-LLMRec stage 2 (§4.2): project the user representation x_u and the joint item embeddings e_i into a frozen
LLM's token space with two 2-layer MLPs (F_U, F_I; eq. 7) and train them on the next item's title given the
Figure-3 prompt (eq. 8). Only F_U and F_I train; the LLM, the backbone and stage 1 are frozen.

Runs on the shared Ray Train loop with DeepSpeed (`train.deepspeed`, ZeRO-2 by default); checkpoints and
`model.safetensors` hold only the projectors (`save_frozen = False`), the LLM is reloaded from its own files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from raylrec.data.prepared import CSR, PreparedData
from raylrec.errors import ArtifactError, RaylrecError
from raylrec.eval.buckets import warm_cold_labels
from raylrec.methods.allmrec.config import Stage2Config
from raylrec.methods.allmrec.diagnostics import collapse_problems, table_stats
from raylrec.methods.allmrec.likelihood import candidate_scores, continuation_loglik
from raylrec.methods.allmrec.prompt import (
    PromptBatch,
    PromptBuilder,
    PromptExample,
    collate,
    item_titles,
    sample_training_candidates,
    shuffled_candidates,
    splice,
)
from raylrec.methods.allmrec.stage1 import CollapseError, backbone_tensors, load_joint_embeddings
from raylrec.text.registry import resolve_model
from raylrec.train.recipe import Recipe

PROJECTOR_FILE = "projector_config.json"
log = logging.getLogger(__name__)


def load_llm(spec: str, cache_root: str | Path | None = None):
    """(frozen causal LM in eval mode, tokenizer) from a packaged short name, folder, GGUF file or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_model(spec, cache_root)
    if resolved.family != "decoder":
        raise RaylrecError(f"stage 2 needs a causal LM; {spec!r} is a {resolved.family} model")
    tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
    llm = AutoModelForCausalLM.from_pretrained(resolved.path, local_files_only=True, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    llm.requires_grad_(False)
    return llm.eval(), tokenizer


@torch.no_grad()
def token_embedding_scale(llm, chunk: int = 8192) -> float:
    """Mean L2 norm of the LLM's input token embeddings as the model itself produces them (Gemma scales its
    embedding table inside the embedding layer, so the layer's output is measured, not its weight)."""
    layer = llm.get_input_embeddings()
    vocab = layer.num_embeddings
    total = 0.0
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(start + chunk, vocab), device=layer.weight.device)
        total += float(layer(ids).float().norm(dim=-1).sum())
    return total / vocab


def projector(in_dim: int, hidden: int, out_dim: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), activation, nn.Linear(hidden, out_dim))


class Stage2Model(nn.Module):
    def __init__(
        self,
        llm,
        user_dim: int,
        joint_dim: int,
        config: Stage2Config,
        token_scale: float,
        tables: dict[str, torch.Tensor],
    ):
        super().__init__()
        self.llm = llm
        width = llm.get_input_embeddings().embedding_dim
        hidden = config.projector_hidden or width
        # F_U and F_I as in the public code: Linear → LayerNorm → LeakyReLU / GELU → Linear. A switched-off input
        # has no projector at all (DDP and DeepSpeed need every trainable parameter to be used).
        self.user_proj = projector(user_dim, hidden, width, nn.LeakyReLU()) if config.user_representation else None
        self.item_proj = projector(joint_dim, hidden, width, nn.GELU()) if config.item_embeddings != "none" else None
        self.token_scale = token_scale if config.scale_match else None
        self.center_tokens = config.center_tokens  # the config refuses it without item embeddings
        self.ranking_weight = config.ranking_loss
        self.match_weight, self.match_temperature = config.match_loss, config.match_temperature
        for name, table in tables.items():  # inputs rebuilt from the artifacts: never checkpointed
            self.register_buffer(name, table.float(), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.llm.eval()  # frozen: no dropout in the LLM, ever
        return self

    def token_offset(self) -> torch.Tensor | None:
        """The mean projected item token that `center_tokens` subtracts (None when off). It moves with F_I while it
        trains, so a forward pass computes it once and hands it to every projection."""
        if not self.center_tokens:
            return None
        return self.item_proj(self.joint_e[1:].to(self.item_proj[0].weight.dtype)).mean(0)

    def project(self, proj: nn.Module, vectors: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        out = proj(vectors.to(proj[0].weight.dtype))
        if self.center_tokens:
            out = out - (self.token_offset() if offset is None else offset)
        if self.token_scale is not None:
            out = out * (self.token_scale / out.norm(dim=-1, keepdim=True).clamp_min(1e-6))
        return out

    def input_embeddings(
        self,
        batch: PromptBatch,
        user_vectors: torch.Tensor | None,
        item_vectors: torch.Tensor | None,
        offset: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings of the prompt with the projected vectors spliced in at the placeholders."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        offset = self.token_offset() if offset is None else offset
        if self.user_proj is not None:
            embeds = splice(embeds, batch.user_mask, self.project(self.user_proj, user_vectors, offset))
        elif batch.user_mask.any():
            raise ValueError("the prompt has a user placeholder but the user representation is switched off")
        if self.item_proj is not None:
            embeds = splice(embeds, batch.item_mask, self.project(self.item_proj, item_vectors, offset))
        elif batch.item_mask.any():
            raise ValueError("the prompt has item placeholders but item embeddings are switched off")
        return embeds

    def forward(
        self,
        input_ids,
        attention_mask,
        labels,
        user_mask,
        item_mask,
        slot_items,
        prompt_lengths,
        user_vectors,
        item_vectors,
        candidate_answers: list[list[list[int]]] | None = None,
        target_positions: torch.Tensor | None = None,
        candidate_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean negative log-likelihood of the answer tokens (eq. 8); prompt positions carry no loss. Given the
        candidates' answer tokens (prompts without answers), the ranking objective instead; given the candidates'
        item vectors (B, C, d'), plus the matching term."""
        batch = PromptBatch(input_ids, attention_mask, labels, user_mask, item_mask, slot_items, prompt_lengths)
        offset = self.token_offset()
        embeds = self.input_embeddings(batch, user_vectors, item_vectors, offset)
        if candidate_answers is None:
            loss = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels).loss
        else:
            loss = self.ranking_objective(embeds, prompt_lengths, candidate_answers, target_positions)
        if candidate_vectors is not None:
            # Ours (`match_loss`): cross-entropy of the target among the candidates by token cosine; no LLM pass.
            logits = self.token_cosines(user_vectors, candidate_vectors, offset) / self.match_temperature
            loss = loss + self.match_weight * nn.functional.cross_entropy(logits, target_positions)
        return loss

    def token_cosines(
        self, user_vectors: torch.Tensor, candidate_vectors: torch.Tensor, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C) cosine of each projected user token F_U(x_u) with its candidates' projected item tokens F_I(e_c)."""
        users = nn.functional.normalize(self.project(self.user_proj, user_vectors, offset), dim=-1)
        items = nn.functional.normalize(self.project(self.item_proj, candidate_vectors, offset), dim=-1)
        return torch.einsum("bw,bcw->bc", users, items)

    def ranking_objective(
        self,
        embeds: torch.Tensor,
        prompt_lengths: torch.Tensor,
        candidate_answers: list[list[list[int]]],
        target_positions: torch.Tensor,
    ) -> torch.Tensor:
        """Ours (`ranking_loss`): eq. 8's answer loss plus `ranking_weight` × a cross-entropy over the prompt's
        candidates, scored by their summed log-likelihood as the answer (the score inference ranks by). Eq. 8 alone
        only teaches the frozen LLM to copy a title from the list; this term says which one."""
        answer_nll, answer_tokens, ranking = 0.0, 0, 0.0
        for row, (answers, target) in enumerate(zip(candidate_answers, target_positions.tolist())):
            length = int(prompt_lengths[row])
            out = self.llm(inputs_embeds=embeds[row : row + 1, :length], use_cache=True)
            total, count = continuation_loglik(self, out.cache, out.logits[0, -1].float(), length, answers)
            answer_nll = answer_nll - total[target]
            answer_tokens += int(count[target])
            ranking = ranking + nn.functional.cross_entropy(
                total.unsqueeze(0), torch.tensor([target], device=total.device)
            )
        return answer_nll / answer_tokens + self.ranking_weight * ranking / len(candidate_answers)


@dataclass
class Stage2Context:
    """What building prompts needs, per process: the builder and the users' sequences."""

    builder: PromptBuilder
    sequences: CSR  # whole sequences (train + valid + test)
    histories: dict[str, CSR]  # items before each split's target ("train": before the last training item)
    targets: dict[str, np.ndarray]
    negatives: dict[str, np.ndarray]  # stored negatives of valid/test
    cold: np.ndarray  # (num_items + 1,) True for cold items (the evaluator's warm/cold rule)
    num_items: int


def make_context(data: PreparedData, builder: PromptBuilder, num_negatives: int, cold_fraction: float) -> Stage2Context:
    train = data.history("train")
    lengths = np.maximum(train.lengths - 1, 0)  # training prompts: history before the last training item
    keep = np.concatenate([np.arange(s, s + n) for s, n in zip(train.indptr[:-1], lengths)] or [np.zeros(0, int)])
    before_last = CSR(np.concatenate([[0], np.cumsum(lengths)]), train.indices[keep.astype(np.int64)])
    last_train = np.array([train.row(u)[-1] if train.lengths[u] else 0 for u in range(data.num_users)])
    negatives = {
        split: data.negatives[(split, num_negatives)]
        for split in ("valid", "test")
        if (split, num_negatives) in data.negatives
    }
    cold = warm_cold_labels(data.item_train_counts(), cold_fraction) == "cold"
    return Stage2Context(
        builder,
        data.sequences,
        {"train": before_last, "valid": data.history("valid"), "test": data.history("test")},
        {"train": last_train, "valid": data.targets("valid"), "test": data.targets("test")},
        negatives,
        cold,
        data.num_items,
    )


class Stage2Recipe(Recipe):
    save_frozen = False  # the LLM is reloaded from its files; checkpoints hold F_U and F_I only
    export_splits = ()  # evaluated by inference.py (generation + likelihood ranking, on Ray workers)

    def __init__(
        self,
        name: str,
        config: Stage2Config,
        backbone_dir: str | Path,
        stage1_dir: str | Path,
        cache_root: str | None = None,
        eval_cold_fraction: float = 0.35,
    ):
        self.name = name
        self.config = config
        self.train = config.train
        self.backbone_dir = str(backbone_dir)
        self.stage1_dir = str(stage1_dir)
        self.cache_root = cache_root
        self.cold_fraction = eval_cold_fraction
        self.context: Stage2Context | None = None

    def __getstate__(self):  # the per-process context (tokenizer, sequences) is rebuilt where the recipe lands
        return {**self.__dict__, "context": None}

    def tables(self, data: PreparedData) -> dict[str, torch.Tensor]:
        items, users = backbone_tensors(Path(self.backbone_dir))
        joint = load_joint_embeddings(Path(self.stage1_dir))
        if joint["e"].shape[0] != data.num_items + 1 or items.shape[0] != data.num_items + 1:
            raise ArtifactError(f"stage-1 / backbone artifacts do not cover the {data.num_items} items of this data")
        e = joint["e"]
        if self.config.item_embeddings == "random":  # same shape and overall scale, no collaborative knowledge
            generator = torch.Generator().manual_seed(self.train.seed)
            e = torch.randn(e.shape, generator=generator) * e[1:].std()
            e[0] = 0
        return {
            "joint_e": e,
            "joint_q": joint["q"],
            "users_train": users["train_hidden"][:, -1],
            "users_valid": users["valid"],
            "users_test": users["test"],
        }

    def build(self, data: PreparedData) -> Stage2Model:
        llm, tokenizer = load_llm(self.config.llm, self.cache_root)
        tables = self.tables(data)
        builder = PromptBuilder(
            tokenizer,
            item_titles(data, self.config.prompt.title_template, self.config.prompt.max_title_chars),
            self.config.prompt,
            user_slot=self.config.user_representation,
            item_slots=self.config.item_embeddings != "none",
        )
        self.context = make_context(data, builder, self.config.prompt.num_negatives, self.cold_fraction)
        return Stage2Model(
            llm,
            tables["users_valid"].shape[1],
            tables["joint_e"].shape[1],
            self.config,
            token_embedding_scale(llm),
            tables,
        )

    def training_users(self, data: PreparedData) -> np.ndarray:
        users = np.flatnonzero(data.history("train").lengths > 0)
        if self.config.train_users is not None and self.config.train_users < len(users):
            rng = np.random.default_rng(self.train.seed)
            users = np.sort(rng.choice(users, self.config.train_users, replace=False))
        return users

    def training_tensors(self, data: PreparedData) -> tuple[torch.Tensor, ...]:
        return (torch.from_numpy(self.training_users(data)),)

    def example(
        self, split: str, user: int, rng: np.random.Generator | None = None, with_target: bool = True
    ) -> PromptExample:
        """The prompt of `user` for predicting the split's target (training candidates drawn from `rng`)."""
        ctx = self.context
        target = int(ctx.targets[split][user])
        if split == "train":
            candidates = sample_training_candidates(
                target, ctx.sequences.row(user), self.config.prompt.num_negatives, ctx.num_items, rng
            )
        else:
            candidates = shuffled_candidates(
                target, ctx.negatives[split][user], self.config.prompt.shuffle_seed, split, user
            )
        return ctx.builder.build(ctx.histories[split].row(user), candidates, target if with_target else None)

    @staticmethod
    def item_table(core: Stage2Model, variant: str = "e", cold: np.ndarray | None = None) -> torch.Tensor:
        if variant == "e":
            return core.joint_e
        if variant == "q":
            return core.joint_q
        mask = torch.from_numpy(cold).to(core.joint_e.device).unsqueeze(1)
        return torch.where(mask, core.joint_q, core.joint_e)

    def model_inputs(
        self,
        core: Stage2Model,
        examples: list[PromptExample],
        users: np.ndarray,
        split: str,
        variant: str = "e",
        with_answer: bool = True,
    ) -> dict:
        batch = collate(examples, self.context.builder.tokenizer.pad_token_id, with_answer)
        device = core.joint_e.device
        table = self.item_table(core, variant, self.context.cold)
        return {
            "input_ids": batch.input_ids.to(device),
            "attention_mask": batch.attention_mask.to(device),
            "labels": batch.labels.to(device),
            "user_mask": batch.user_mask.to(device),
            "item_mask": batch.item_mask.to(device),
            "slot_items": batch.slot_items.to(device),
            "prompt_lengths": batch.prompt_lengths.to(device),
            "user_vectors": getattr(core, f"users_{split}")[torch.from_numpy(users).to(device)],
            "item_vectors": table[batch.slot_items.to(device)],
        }

    def loss(self, model, core: Stage2Model, batch, generator):
        (users,) = batch
        users = users.cpu().numpy()
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        examples = [self.example("train", int(u), rng) for u in users]
        ranking, matching = bool(self.config.ranking_loss), bool(self.config.match_loss)
        inputs = self.model_inputs(core, examples, users, "train", with_answer=not ranking)
        if ranking or matching:
            targets = self.context.targets["train"]
            positions = [ex.candidates.index(int(targets[u])) for ex, u in zip(examples, users)]
            inputs["target_positions"] = torch.tensor(positions, device=core.joint_e.device)
        if ranking:
            builder = self.context.builder
            inputs["candidate_answers"] = [[builder.answer_tokens(c) for c in ex.candidates] for ex in examples]
        if matching:
            candidates = torch.tensor([ex.candidates for ex in examples], device=core.joint_e.device)
            inputs["candidate_vectors"] = core.joint_e[candidates]
        return model(**inputs)

    def scorer(self, core: Stage2Model, data: PreparedData, split: str, device: torch.device):
        """Candidate-only scores: each candidate's log-likelihood as the answer; every other item −inf."""

        def score(users: np.ndarray) -> torch.Tensor:
            out = torch.full((len(users), data.num_items + 1), float("-inf"))
            for row, user in enumerate(users):
                example = self.example(split, int(user), with_target=False)
                scores = candidate_scores(self, core, example, int(user), split)
                out[row, torch.tensor(example.candidates)] = scores
            return out

        return score

    @torch.no_grad()
    def projected_diagnostics(self, core: Stage2Model) -> dict:
        """Collapse diagnostics of what the LLM sees: F_I(e_i), F_I(q_i) over all items, F_U(x_u) over test users."""
        out = {}
        if core.item_proj is not None:
            out["projected_e"] = table_stats(core.project(core.item_proj, core.joint_e[1:]))
            out["projected_q"] = table_stats(core.project(core.item_proj, core.joint_q[1:]))
        if core.user_proj is not None:
            out["projected_users"] = table_stats(core.project(core.user_proj, core.users_test))
        return out

    @torch.no_grad()
    def token_space_hit(self, core: Stage2Model, split: str = "valid") -> float | None:
        """HR@1 of the split's stored candidates ranked by cos(F_U(x_u), F_I(e_c)) alone, no LLM: how much of the
        target the projected tokens carry, to read against the LLM's own ranking (None without both projectors)."""
        negatives = self.context.negatives.get(split)
        if negatives is None or core.user_proj is None or core.item_proj is None:
            return None
        candidates = np.concatenate([self.context.targets[split][:, None], negatives], 1)
        item_vectors = core.joint_e[torch.from_numpy(candidates).to(core.joint_e.device)]
        scores = core.token_cosines(getattr(core, f"users_{split}"), item_vectors)
        return float((scores[:, 0] > scores[:, 1:].max(1).values).float().mean())

    def export(self, core: Stage2Model, data: PreparedData, out: Path) -> dict:
        diagnostics = self.projected_diagnostics(core)
        token_space_hit = self.token_space_hit(core)
        problems, other = collapse_problems(diagnostics, self.config.collapse)
        for problem in other:
            log.warning("A-LLMRec stage 2 (%s): %s (not a checked table: kept)", out, problem)
        if problems:
            message = f"A-LLMRec stage 2 ({out}): the projected item tokens collapsed: {'; '.join(problems)}"
            if self.config.collapse.action == "error":
                raise CollapseError(message)
            log.warning(message)
        facts = {
            "llm": self.config.llm,
            "token_scale": core.token_scale,
            "token_width": core.llm.get_input_embeddings().embedding_dim,
            "frozen_llm_params": sum(p.numel() for p in core.llm.parameters()),
            "stage1": self.stage1_dir,
            "backbone": self.backbone_dir,
            "diagnostics": diagnostics,
            "token_space_valid_hit@1": token_space_hit,
            "warnings": [f"stage 2 projected tokens collapsed: {p}" for p in problems + other],
        }
        (out / PROJECTOR_FILE).write_text(json.dumps(facts, indent=2))
        return facts

    def config_dump(self) -> dict:
        return self.config.model_dump(mode="json")
