"""Each stored candidate's log-likelihood as the LLM's answer to the Figure-3 prompt: the prompt runs once and its
key/value cache serves every candidate (stage 2's validation ranking and inference's likelihood ranking)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from raylrec.methods.allmrec.prompt import PromptBatch, PromptExample

if TYPE_CHECKING:  # stage2.py imports this module; the annotations only
    from raylrec.methods.allmrec.stage2 import Stage2Model, Stage2Recipe


@torch.no_grad()
def prompt_pass(core: Stage2Model, inputs: dict):
    """Run one prompt (batch of 1) through the LLM: (key/value cache, next-token logits, prompt length)."""
    return prompt_forward(core, inputs)


def prompt_forward(core: Stage2Model, inputs: dict):
    """`prompt_pass` with gradients (stage 2's ranking loss)."""
    batch = PromptBatch(
        inputs["input_ids"],
        inputs["attention_mask"],
        inputs["labels"],
        inputs["user_mask"],
        inputs["item_mask"],
        inputs["slot_items"],
        inputs["prompt_lengths"],
    )
    embeds = core.input_embeddings(batch, inputs["user_vectors"], inputs["item_vectors"])
    out = core.llm(inputs_embeds=embeds, attention_mask=inputs["attention_mask"], use_cache=True)
    return out.cache, out.logits[0, -1].float(), embeds.shape[1]


@torch.no_grad()
def answers_loglik(
    core: Stage2Model, cache, last_logits: torch.Tensor, prompt_length: int, answers: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C,) summed log-likelihood of each answer continuing the cached prompt, and (C,) its token count (their
    ratio is the length-normalised score); the cache is expanded in place."""
    return continuation_loglik(core, cache, last_logits, prompt_length, answers)


def continuation_loglik(
    core: Stage2Model, cache, last_logits: torch.Tensor, prompt_length: int, answers: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`answers_loglik` with gradients (stage 2's ranking loss)."""
    device = last_logits.device
    count, width = len(answers), max(len(a) for a in answers)
    tokens = torch.zeros((count, width), dtype=torch.long, device=device)
    mask = torch.zeros((count, width), dtype=torch.bool, device=device)
    for row, answer in enumerate(answers):
        tokens[row, : len(answer)] = torch.tensor(answer, device=device)
        mask[row, : len(answer)] = True
    logp = torch.log_softmax(last_logits, -1)[tokens[:, 0]].unsqueeze(1)  # first answer token: from the prompt
    if width > 1:
        cache.batch_repeat_interleave(count)
        attention = torch.cat(
            [torch.ones((count, prompt_length), dtype=torch.long, device=device), mask[:, :-1].long()], dim=1
        )
        positions = torch.arange(prompt_length, prompt_length + width - 1, device=device).expand(count, -1)
        out = core.llm(
            inputs_embeds=core.llm.get_input_embeddings()(tokens[:, :-1]),
            attention_mask=attention,
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        rest = torch.log_softmax(out.logits.float(), -1).gather(2, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        logp = torch.cat([logp, rest], dim=1)
    return (logp * mask).sum(1), mask.sum(1)


def candidate_scores(
    recipe: Stage2Recipe,
    core: Stage2Model,
    example: PromptExample,
    user: int,
    split: str,
    variant: str = "e",
    length_normalize: bool = False,
) -> torch.Tensor:
    """(C,) log-likelihood of each of the example's candidates (in its shown order) as the answer, summed or
    per token (`length_normalize`)."""
    inputs = recipe.model_inputs(core, [example], np.array([user]), split, variant, with_answer=False)
    cache, last_logits, length = prompt_pass(core, inputs)
    answers = [recipe.context.builder.answer_tokens(c) for c in example.candidates]
    total, count = answers_loglik(core, cache, last_logits, length, answers)
    return (total / count if length_normalize else total).cpu()
