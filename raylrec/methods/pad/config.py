"""Typed configuration of PAD (pre-train, align, disentangle) and of the baselines built from the same code."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raylrec.config import StrictModel
from raylrec.data.prepare import DataConfig
from raylrec.eval.evaluator import EvalConfig
from raylrec.storage import DEFAULT_RUN_DIR
from raylrec.text.encode import EncodeConfig
from raylrec.text.encoder import TextModelConfig
from raylrec.train.config import TrainConfig
from raylrec.train.spec import StageSpec

ExpertName = Literal["id", "align", "llm"]
EXPERT_ORDER: tuple[ExpertName, ...] = ("id", "align", "llm")
Baseline = Literal["hybrid", "morec"]


class PhaseTrainConfig(TrainConfig):
    """Training settings of phases 2 and 3. `loss`: `bce` (the paper's eq. 1 and 6: one sampled negative per
    position) or `ce` (softmax over all items of the phase's scores — for phase 3 the gated scores Φ — as the
    cross-entropy SASRec trains)."""

    loss: Literal["bce", "ce"] = "bce"


class AlignmentLossConfig(StrictModel):
    """The distribution-matching term of phase 2 (eq. 5) and the alternatives compared in RQ3."""

    kernel: Literal["gaussian", "laplacian", "linear", "cosine", "infonce"] = "gaussian"
    # Gaussian/Laplacian kernel u has bandwidth σ_u² = 2^k_u · (mean pairwise distance of the batch), as tllib.
    bandwidth_exponents: list[float] = Field(default_factory=lambda: [-3.0, -2.0, -1.0, 0.0, 1.0], min_length=1)
    estimator: Literal["unbiased", "biased"] = "unbiased"
    temperature: float = Field(0.07, gt=0)  # InfoNCE τ
    # The kernel matrix is quadratic in the rows compared: at most this many non-padding rows of a batch
    # (drawn at random) enter the loss. None = every row.
    max_samples: int | None = Field(512, ge=4)


class TowerConfig(StrictModel):
    """How items become vectors: the text MLP f_MLP (eq. 7) and the alignment expert's fusion."""

    text_mlp_layers: int = Field(1, ge=1)  # Linear layers from the text dimension down to the ID dimension
    dropout: float = Field(0.1, ge=0, lt=1)
    fuse: Literal["cat", "add"] = "cat"  # alignment expert: Linear([text; ID]) or text + ID
    # How the `cat` fusion's Linear starts. id: the identity on the ID half, zero on the text half (the output is
    # the phase-1 ID vector at step 0); balanced: both halves a scaled identity, the text half scaled so that its
    # contribution has the same root-mean-square size as the ID half's (each 1/√2 of the ID table's), so the text
    # half carries half of the item vector from the first step.
    fuse_init: Literal["id", "balanced"] = "id"
    # Decoder hidden states have a few dimensions of huge magnitude; z-scoring each dimension over the items
    # keeps them from dominating the MLP's input.
    standardize_text: bool = True


class AlignConfig(StrictModel):
    """Phase 2: the alignment expert trained with L_REC + γ · alignment loss."""

    variant: Literal["none", "non_anchored", "rec_anchored", "rec_anchored_frozen"] = "rec_anchored"
    gamma: float = Field(0.2, ge=0)
    loss: AlignmentLossConfig = AlignmentLossConfig()
    train: PhaseTrainConfig = PhaseTrainConfig()


def public_gate_init() -> dict[str, tuple[float, float]]:
    # Gate logits on (rarest bucket, most popular bucket), interpolated linearly in between, as the public
    # code: the ID expert trusted on popular items, the LLM expert on rare ones, the alignment expert nearly off.
    return {"id": (0.0, 1.0), "align": (-5.0, -4.0), "llm": (1.0, 0.0)}


class ExpertsConfig(StrictModel):
    """Phase 3: experts fused by a frequency-aware gate, trained with L_REC only."""

    experts: list[ExpertName] = Field(default_factory=lambda: list(EXPERT_ORDER), min_length=1)
    # frequency: a learned logit per expert per bucket of the target item (the public code); frequency_embedding:
    # eq. 11 — plus, per expert, a linear term in its layer-normed target item vector and one in its layer-normed
    # user state (the expert's encoding of the behaviour sequence), both starting at zero; global: one logit per
    # expert for every item (the "no gating" ablation).
    gating: Literal["frequency", "frequency_embedding", "global"] = "frequency"
    # none: Φ = Σ_e g_e · o_e on the raw expert logits (the paper); standardize: each expert's logits are z-scored
    # over the items (per user state) before gating and Φ is scaled by one learned temperature, so no expert can
    # outweigh the others by widening its logit range — only the gate decides the mix.
    normalize: Literal["none", "standardize"] = "none"
    # Learning rate of the gate (and of the temperature under `normalize: standardize`); None: train.lr.
    gate_lr: float | None = Field(None, gt=0)
    num_buckets: int = Field(10, ge=1)
    gate_init: dict[ExpertName, tuple[float, float]] = Field(default_factory=public_gate_init)
    init: Literal["pretrained", "scratch"] = "pretrained"  # pretrained: ID expert from phase 1, alignment from 2
    # Experts phase 3 keeps as phases 1 / 2 left them (only the gate and the other experts train): a strong
    # backbone that fine-tuning would only overfit stays as it was chosen on validation.
    freeze: list[Literal["id", "align"]] = Field(default_factory=list)
    train: PhaseTrainConfig = PhaseTrainConfig()

    @field_validator("experts")
    @classmethod
    def _canonical_order(cls, experts: list[str]) -> list[str]:
        if len(set(experts)) != len(experts):
            raise ValueError(f"experts repeat a name: {experts}")
        return [name for name in EXPERT_ORDER if name in experts]

    @model_validator(mode="after")
    def _frozen_experts_are_pretrained(self) -> ExpertsConfig:
        unknown = [name for name in self.freeze if name not in self.experts]
        if unknown:
            raise ValueError(f"freeze names experts that are not used: {unknown}")
        if self.freeze and self.init != "pretrained":
            raise ValueError("freeze keeps pretrained experts as they are; it needs init: pretrained")
        return self

    @model_validator(mode="after")
    def _every_expert_has_a_gate_init(self) -> ExpertsConfig:
        missing = [name for name in self.experts if name not in self.gate_init]
        if missing:
            raise ValueError(f"gate_init has no entry for {missing}")
        return self


def default_text() -> EncodeConfig:
    # A small decoder with mean pooling stands in for LLM2Vec (Llama-3-8B), which does not fit this hardware.
    return EncodeConfig(text=TextModelConfig(model="smollm2-135m", pooling="mean"))


class PadConfig(StrictModel):
    """Everything `raylrec train --method pad` runs: phase 1 → text encoding → phase 2 → phase 3 → baselines."""

    run_dir: str = DEFAULT_RUN_DIR
    name: str = "pad"  # phase 3's stage folder; phase 2 is `<name>-align`
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    pretrain: StageSpec = StageSpec(name="sasrec-bce", preset="sasrec-bce")
    text: EncodeConfig = Field(default_factory=default_text)
    towers: TowerConfig = TowerConfig()
    align: AlignConfig = AlignConfig()
    experts: ExpertsConfig = ExpertsConfig()
    baselines: list[Baseline] = Field(default_factory=list)

    @property
    def align_stage_name(self) -> str:
        return f"{self.name}-align"

    @property
    def needs_alignment_phase(self) -> bool:
        return self.experts.init == "pretrained" and "align" in self.experts.experts
