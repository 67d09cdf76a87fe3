"""§4.1 hard prompt: "Your task is to recommend … based on their history: <most recent item texts>".

Item texts are tokenized once; a user's prompt is assembled from token pieces, newest items kept first when the
token budget is short (the instruction and the special tokens always stay), then put back in time order so the
most recent item is last. Pieces are tokenized with a leading space so that byte-level BPE tokenizers see
word starts as they would in running text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raylrec.errors import RaylrecError
from raylrec.methods.idle.config import PromptConfig
from raylrec.text.templates import default_instruction, render_texts, template_fields


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text ([CLS] … [SEP] for BERT; BOS or nothing for decoders)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    return [], []


class PromptBuilder:
    """Token ids of users' hard prompts, right-padded to `config.max_tokens`."""

    def __init__(self, tokenizer, items: pd.DataFrame, num_items: int, config: PromptConfig, dataset: str):
        self.config = config
        template = config.template or default_instruction(dataset)
        if template.count("{history}") != 1:
            raise RaylrecError(f"prompt template must contain {{history}} exactly once: {template!r}")
        before, after = template.split("{history}")
        opening, closing = special_tokens(tokenizer)
        self.head = opening + (
            tokenizer(before.rstrip(), add_special_tokens=False)["input_ids"] if before.strip() else []
        )
        self.tail = (tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []) + closing
        self.separator = tokenizer(config.separator.rstrip(), add_special_tokens=False)["input_ids"]
        self.budget = config.max_tokens - len(self.head) - len(self.tail)
        if self.budget < 1:
            raise RaylrecError(
                f"prompt.max_tokens={config.max_tokens} leaves no room for items after the "
                f"instruction ({len(self.head) + len(self.tail)} tokens)"
            )
        template_fields(config.item_template)
        rendered = render_texts(items, config.item_template)
        texts = [""] * (num_items + 1)
        for item, text in zip(rendered.items, rendered.texts):
            texts[item] = text
        self.texts = texts  # per item index ("" for padding and items without a row)
        encoded = tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"]
        self.item_ids = [list(ids) for ids in encoded]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def ids(self, history: np.ndarray) -> list[int]:
        """One prompt from a user's items (time order; 0 = padding is skipped)."""
        pieces, used = [], 0
        for item in history[::-1][: self.config.max_items]:
            if item <= 0:
                continue
            piece = self.item_ids[item] + (self.separator if pieces else [])
            if used + len(piece) > self.budget:
                if not pieces:  # the newest item alone is too long: keep its first tokens
                    pieces.append(self.item_ids[item][: self.budget])
                break
            pieces.append(piece)
            used += len(piece)
        body = [token for piece in reversed(pieces) for token in piece]
        return self.head + body + self.tail

    def batch(self, histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(N, max_tokens) input ids and attention mask (right padding)."""
        ids = np.full((len(histories), self.config.max_tokens), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, history in enumerate(histories):
            tokens = self.ids(np.asarray(history))
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask
