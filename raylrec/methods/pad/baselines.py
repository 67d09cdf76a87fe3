"""The paper's cheap baselines as configurations of the phase-3 code: one expert, trained from scratch.

Hybrid (CoLLM/LLaRA hybrid encoding) concatenates text and ID embeddings into the sequence model: the
alignment expert's architecture with no alignment phase. MoRec feeds MLP-reduced text embeddings as the
item embeddings: the LLM-specific expert alone. Both train with phase 1's training settings (its loss included:
BCE or cross-entropy), so they compare with the SASRec of phase 1 on equal terms.
"""

from __future__ import annotations

from pathlib import Path

from raylrec.methods.pad.config import Baseline, ExpertsConfig, PadConfig, PhaseTrainConfig
from raylrec.methods.pad.experts import ExpertsRecipe
from raylrec.train.config import StageConfig

BASELINE_EXPERTS: dict[Baseline, list[str]] = {"hybrid": ["align"], "morec": ["llm"]}


def baseline_experts(baseline: Baseline, pretrain: StageConfig) -> ExpertsConfig:
    train = PhaseTrainConfig.model_validate(pretrain.train.model_dump())  # its loss too: BCE or cross-entropy
    return ExpertsConfig(experts=BASELINE_EXPERTS[baseline], init="scratch", train=train)


def baseline_recipe(
    baseline: Baseline, config: PadConfig, pretrain: StageConfig, embeddings_dir: str | Path
) -> ExpertsRecipe:
    return ExpertsRecipe(
        baseline,
        pretrain.model,
        config.towers,
        baseline_experts(baseline, pretrain),
        embeddings_dir,
        eval_config=config.eval,
    )
