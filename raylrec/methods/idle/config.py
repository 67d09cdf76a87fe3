"""Typed configuration of IDLE-Adapter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raylrec.config import StrictModel
from raylrec.data.prepare import DataConfig
from raylrec.eval.evaluator import EvalConfig
from raylrec.storage import DEFAULT_RUN_DIR
from raylrec.train.config import TrainConfig
from raylrec.train.spec import StageSpec


class AdapterConfig(StrictModel):
    """Eq. 5–11. The three ablation switches of Table 4 are `layerwise`, `refinement` and (in MMDConfig) `weight`."""

    prompt_length: int = Field(2, ge=1)  # L': virtual tokens per layer (Figure 3: 1–4)
    # kv: the virtual tokens are hidden states of layer l, turned into keys/values by the layer's own frozen
    # (norm +) key/value projections (+ rotary at positions 0..L'-1) — eq. 10–11. ptuning_v2: D^(l) is mapped
    # straight to key/value vectors by a trainable linear map per layer (works for any backbone with a KV cache).
    injection: Literal["kv", "ptuning_v2"] = "kv"
    layerwise: bool = True  # False = "w/o LayerWise": one projection/prefix/gate shared by every layer
    refinement: bool = True  # False = "w/o Refinement": D = P (no learned prefix C, no gate)
    gate_per_layer: bool = False  # the paper writes one W_g ∈ R^{2d'} for all layers
    init_std: float = Field(0.02, gt=0)  # truncated normal, cut at ±init_std (the paper: "in [-0.02, 0.02]")


class MMDConfig(StrictModel):
    """Eq. 12: Gaussian-kernel MMD between D^(l) and the frozen LLM's own hidden states H̃^(l), summed over layers."""

    weight: float = Field(0.1, ge=0)  # λ of eq. 15; 0 = "w/o Distribution" (and no frozen pass is run)
    rho: float | None = Field(None, gt=0)  # K(x, y) = exp(-‖x−y‖² / 2ρ); None = median heuristic per layer and batch
    samples_per_batch: int = Field(8, ge=1)  # prompts of a batch run through the frozen LLM for H̃
    max_rows: int = Field(256, ge=2)  # H̃ token rows per layer (random subset of the real tokens)


class PromptConfig(StrictModel):
    """§4.1 hard prompt: an instruction around the user's most recent item texts, cut to a token budget."""

    template: str | None = None  # must contain {history}; None = the dataset's domain default (prompt.py)
    item_template: str = "{title}"  # fields of the items table, e.g. "{title} ({year})"
    separator: str = ", "
    max_items: int = Field(20, ge=1)  # most recent items considered
    max_tokens: int = Field(64, ge=8)  # whole prompt incl. special tokens; the oldest items are dropped first


class HeadConfig(StrictModel):
    """Eq. 14's item head W_y. `random` is the paper's; `id_tied`, `text` and `id_residual` are our extensions
    (docs/idle.md): with a few thousand CPU-sized training prompts a free M×d' head sees most items rarely or never
    as a target, so these give every item a row that means something before training."""

    # random: truncated normal (the paper, §5.1). id_tied: W_y = A·Iᵀ, the frozen ID model's item table I (M×d)
    # through a learned d'×d map A (only A trains). text: rows start as the frozen language model's own pooled
    # embedding of each item's text (prompt.item_template), the only start that gives never-seen items a row.
    init: Literal["random", "id_tied", "text"] = "random"
    # Add the frozen ID model's logits u·Iᵀ, times a learned temperature τ (starts at 1), to the head's logits,
    # which are multiplied by a learned gain that starts at 0: before the first step the scores are exactly the ID
    # model's. On training prefixes those ID logits are in-sample (the ID model trained on them): docs/idle.md.
    id_residual: bool = False
    bias: bool = False  # eq. 14 has none
    batch_items: int = Field(256, ge=1)  # item texts per forward pass when computing the `text` init


class IdleTrainConfig(TrainConfig):
    """The paper: AdamW, lr 5e-4 with a linear decay (§5.1)."""

    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = 5e-4
    lr_schedule: Literal["constant", "linear"] = "linear"
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3


class IdleConfig(StrictModel):
    """Everything `raylrec train --method idle` runs: the ID backbone stage, then the IDLE-Adapter stage."""

    run_dir: str = DEFAULT_RUN_DIR
    name: str = "idle"  # the IDLE stage's folder under models/
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    # The frozen ID model (SASRec by default: ComiRec, the paper's default, is not in the model registry).
    id_model: StageSpec = StageSpec(name="sasrec", preset="sasrec")
    backbone: str = "minilm"  # text model: packaged short name, local folder/.gguf, or hub id (registry.py)
    # Sequence representation fed to the item head (eq. 14): auto = the sentence-transformers pooling of an SBERT
    # folder (mean for minilm), [CLS] for other encoders, the last real token for decoders.
    pooling: Literal["auto", "cls", "mean", "last"] = "auto"
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    adapter: AdapterConfig = AdapterConfig()
    mmd: MMDConfig = MMDConfig()
    prompt: PromptConfig = PromptConfig()
    # Eq. 13 trains on every prefix of every user's training sequence; `subsequences_per_user` keeps only each
    # user's most recent this-many prefixes (None = all, as the paper). To see more prefixes within a CPU budget
    # keep them all and set `train.samples_per_epoch`: each epoch then takes the next slice of a shuffled cycle
    # through every prefix, so all of them are seen once before any repeats.
    subsequences_per_user: int | None = Field(None, ge=1)
    head: HeadConfig = HeadConfig()
    # Ours: in the training loss, mask the items of the prefix's ID-model window (its last max_len items) as the
    # evaluation masks the history (eval.exclude_history), so the head is not trained to push down items similar to
    # what the user already saw — which the evaluation never ranks anyway. False = the paper's plain softmax.
    loss_excludes_history: bool = False
    train: IdleTrainConfig = IdleTrainConfig()
    # DeepSpeed for decoder backbones (the issue: decoders train under DeepSpeed ZeRO 2/3 from a config file): a
    # shipped config (zero2, zero3), a JSON/YAML file or a mapping, used when `train.deepspeed` is not set.
    # Only the adapter and head are in the engine (the frozen LLM is outside the module). None = plain DDP.
    decoder_deepspeed: str | dict | None = "zero2"
