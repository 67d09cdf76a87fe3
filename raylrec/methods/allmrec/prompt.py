"""The stage-2 prompt (paper Figure 3) as token ids with placeholder slots, and the splicing of projected vectors
into the LLM's input embeddings at those slots.

The prompt is rendered as text with slot markers (`[UserRep]` for the projected user representation O_u,
`[ItemEmb]` after each history/candidate title for O_i), wrapped in the tokenizer's chat template when it has one
(instruct models; `prompt.chat_template`) or else put after the tokenizer's BOS, split at the markers, and each
text piece is tokenized on its own (cached, so every distinct piece is tokenized once). A marker becomes one
placeholder token whose embedding is overwritten: no token is added to the LLM's vocabulary, and the frozen LLM is
never resized. The answer is the target in the surface form the list shows (`prompt.answer_format`, the quoted
title as the public code's target) + EOS, so its tokens are tokens of the prompt that the LLM can copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from raylrec.data.prepared import PreparedData
from raylrec.methods.allmrec.config import ITEM_SLOT, USER_SLOT, PromptConfig

SLOT_PATTERN = re.compile("(" + re.escape(USER_SLOT) + "|" + re.escape(ITEM_SLOT) + ")")
SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


@dataclass
class PromptExample:
    ids: list[int]  # prompt tokens; slot positions hold a placeholder id
    user_slots: list[int]  # positions of the user slot (0 or 1 of them)
    item_slots: list[int]  # positions of item slots, in prompt order
    slot_items: list[int]  # the item behind each item slot, same order
    history: list[int]  # history items shown (oldest first, after truncation)
    candidates: list[int]  # candidates in the order shown
    answer: list[int] = field(default_factory=list)  # target title tokens + EOS ([] when there is no target)


def item_titles(data: PreparedData, template: str = "{title}", max_chars: int = 80) -> list[str]:
    """Display title of every item (index = item; index 0 = ""), from the items table through `template`.

    Missing fields render empty; an item without any text is called `item <raw id>`. Slot markers are removed
    from titles so that a title can never add a placeholder.
    """
    items = data.items_table().set_index("item")
    fields = [name for name in re.findall(r"{(\w+)}", template)]
    titles = [""] * (data.num_items + 1)
    for item, row in items.iterrows():
        values = {
            name: ("" if row.get(name) is None or str(row.get(name)) in ("nan", "<NA>") else str(row.get(name)))
            for name in fields
        }
        text = template.format(**values).strip() if any(values.values()) else f"item {row.get('item_id', item)}"
        text = SLOT_PATTERN.sub("", text).strip()
        titles[int(item)] = text[:max_chars].rstrip()
    return titles


class PromptBuilder:
    def __init__(
        self, tokenizer, titles: list[str], config: PromptConfig, user_slot: bool = True, item_slots: bool = True
    ):
        self.tokenizer = tokenizer
        self.titles = titles
        self.config = config
        self.user_slot = user_slot
        self.item_slot = item_slots
        self.eos_id = tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the LLM's tokenizer has no EOS token: the stage-2 target is title + EOS")
        self.placeholder_id = next(
            i for i in (tokenizer.unk_token_id, tokenizer.pad_token_id, self.eos_id) if i is not None
        )
        self.chat = config.chat_template and bool(getattr(tokenizer, "chat_template", None))
        # The chat template writes its own start tokens; a plain prompt starts with the BOS when there is one.
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and not self.chat else []
        self._pieces: dict[str, list[int]] = {}
        history_first = config.template.index("{history}") < config.template.index("{candidates}")
        self._history_first = history_first

    def tokens(self, text: str) -> list[int]:
        cached = self._pieces.get(text)
        if cached is None:
            cached = self.tokenizer(text, add_special_tokens=False).input_ids if text else []
            self._pieces[text] = cached
        return cached

    def answer_text(self, item: int) -> str:
        return self.config.answer_format.format(title=self.titles[item])

    def answer_tokens(self, item: int) -> list[int]:
        return self.tokens(self.config.answer_prefix + self.answer_text(item)) + [self.eos_id]

    def render(self, history: list[int], candidates: list[int]) -> str:
        c = self.config
        item_format = c.item_format if self.item_slot else c.item_format_no_embedding
        listed = lambda items: c.separator.join(item_format.format(title=self.titles[i]) for i in items)  # noqa: E731
        text = c.template.format(
            user_sentence=c.user_sentence if self.user_slot else "",
            history=listed(history),
            candidates=listed(candidates),
            noun=c.noun,
            verb=c.verb,
            verb_past=c.verb_past,
        )
        if self.chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            )
        return text

    def assemble(self, history: list[int], candidates: list[int]) -> PromptExample:
        ids = list(self.bos)
        user_slots, item_slots = [], []
        for piece in SLOT_PATTERN.split(self.render(history, candidates)):
            if piece == USER_SLOT:
                user_slots.append(len(ids))
                ids.append(self.placeholder_id)
            elif piece == ITEM_SLOT:
                item_slots.append(len(ids))
                ids.append(self.placeholder_id)
            else:
                ids.extend(self.tokens(piece))
        slot_items = (list(history) + list(candidates)) if self._history_first else (list(candidates) + list(history))
        if not self.item_slot:
            slot_items = []
        if len(item_slots) != len(slot_items):  # a template that repeats {history}/{candidates}, or a marker in text
            raise ValueError(f"the prompt has {len(item_slots)} item placeholders for {len(slot_items)} items")
        return PromptExample(ids, user_slots, item_slots, slot_items, list(history), list(candidates))

    def build(
        self, history: list[int] | np.ndarray, candidates: list[int] | np.ndarray, target: int | None = None
    ) -> PromptExample:
        """The prompt for the most recent `num_history` items of `history` (oldest first) and the candidates in
        the given order; with `max_prompt_tokens`, the oldest history items are dropped until it fits."""
        limit = self.config.max_prompt_tokens
        history = [int(i) for i in history][-self.config.num_history :] if self.config.num_history else []
        candidates = [int(i) for i in candidates]
        example = self.assemble(history, candidates)
        while limit is not None and len(example.ids) > limit and history:
            history = history[1:]
            example = self.assemble(history, candidates)
        if limit is not None and len(example.ids) > limit:
            raise ValueError(
                f"the prompt needs {len(example.ids)} tokens with no history at all; "
                f"max_prompt_tokens={limit} cannot hold the {len(candidates)} candidates"
            )
        if target is not None:
            example.answer = self.answer_tokens(int(target))
        return example


def shuffled_candidates(target: int, negatives: np.ndarray, seed: int, split: str, user: int) -> np.ndarray:
    """Target + stored negatives in an order fixed by (seed, split, user): the same every run and epoch."""
    candidates = np.concatenate([[target], negatives]).astype(np.int64)
    order = np.random.default_rng([seed, SPLIT_IDS[split], int(user)]).permutation(len(candidates))
    return candidates[order]


def sample_training_candidates(
    target: int, seen: np.ndarray, num_negatives: int, num_items: int, rng: np.random.Generator
) -> np.ndarray:
    """Target + `num_negatives` distinct uniform items outside `seen`, shuffled (training has no stored negatives)."""
    excluded = set(int(i) for i in seen) | {int(target)}
    if num_items - len(excluded) < num_negatives:
        raise ValueError(f"only {num_items - len(excluded)} items are left to sample {num_negatives} negatives from")
    negatives: list[int] = []
    while len(negatives) < num_negatives:
        for item in rng.integers(1, num_items + 1, size=2 * num_negatives):
            if int(item) not in excluded:
                excluded.add(int(item))
                negatives.append(int(item))
                if len(negatives) == num_negatives:
                    break
    candidates = np.asarray([target, *negatives], dtype=np.int64)
    return candidates[rng.permutation(len(candidates))]


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T): answer tokens, -100 elsewhere
    user_mask: torch.Tensor  # (B, T) bool
    item_mask: torch.Tensor  # (B, T) bool
    slot_items: torch.Tensor  # (number of item slots,) items in row-major slot order
    prompt_lengths: torch.Tensor  # (B,)


def collate(examples: list[PromptExample], pad_id: int, with_answer: bool = True) -> PromptBatch:
    rows = [ex.ids + (ex.answer if with_answer else []) for ex in examples]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    user_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    item_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for b, (ex, row) in enumerate(zip(examples, rows)):
        input_ids[b, : len(row)] = torch.tensor(row)
        attention[b, : len(row)] = 1
        if with_answer and ex.answer:
            labels[b, len(ex.ids) : len(row)] = torch.tensor(ex.answer)
        user_mask[b, ex.user_slots] = True
        item_mask[b, ex.item_slots] = True
    slot_items = torch.tensor([i for ex in examples for i in ex.slot_items], dtype=torch.long)
    return PromptBatch(
        input_ids, attention, labels, user_mask, item_mask, slot_items, torch.tensor([len(ex.ids) for ex in examples])
    )


def splice(embeds: torch.Tensor, mask: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Overwrite the (B, T, H) embeddings at the True positions of the (B, T) mask with `vectors` (row-major order).
    The number of placeholders must equal the number of vectors."""
    slots = int(mask.sum())
    if slots != vectors.shape[0]:
        raise ValueError(f"{slots} placeholders in the prompt but {vectors.shape[0]} vectors to put there")
    if slots == 0:
        return embeds
    return embeds.masked_scatter(mask.unsqueeze(-1), vectors.to(embeds.dtype))
