"""PAD end to end: phase 1 (pre-train) → text encoding → phase 2 (align) → phase 3 (experts) → baselines.

Every phase writes named artifacts under the run directory and reads the previous phase's by name:
  <run_dir>/models/<pretrain.name>/     phase 1 (any ID-model stage: SASRec with BCE by default, or the
                                        cross-entropy SASRec; a finished one is reused)
  <run_dir>/embeddings/<key>/           item text embeddings (`raylrec encode`, cached per settings)
  <run_dir>/models/<name>-align/        phase 2
  <run_dir>/models/<name>/              phase 3
  <run_dir>/models/{hybrid,morec}/      baselines
A finished phase (DONE.json) is skipped and an interrupted one resumes from its latest checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

from raylrec.data.prepare import ensure_prepared
from raylrec.methods.pad.alignment import AlignmentRecipe
from raylrec.methods.pad.baselines import baseline_recipe
from raylrec.methods.pad.config import PadConfig
from raylrec.methods.pad.experts import ExpertsRecipe
from raylrec.methods.pad.phase import PadStageRecipe
from raylrec.storage import RunLayout
from raylrec.text.encode import encode_items
from raylrec.train.config import StageConfig
from raylrec.train.spec import resolve_stage
from raylrec.train.stage import StageJob, run_stage, run_training_stage, stage_dir

log = logging.getLogger(__name__)


def pretrain_stage(config: PadConfig) -> StageConfig:
    return resolve_stage(config.pretrain, config.run_dir, config.data, config.eval)


def stage_job(recipe: PadStageRecipe, config: PadConfig, data_dir: Path) -> StageJob:
    return StageJob.of_method(recipe, recipe.train, config, data_dir)  # each phase recipe carries its own train


def alignment_recipe(config: PadConfig, pretrain: StageConfig, embeddings_dir: str | Path) -> AlignmentRecipe:
    return AlignmentRecipe(
        config.align_stage_name, pretrain.model, config.towers, config.align, stage_dir(pretrain), embeddings_dir
    )


def experts_recipe(config: PadConfig, pretrain: StageConfig, embeddings_dir: str | Path) -> ExpertsRecipe:
    return ExpertsRecipe(
        config.name,
        pretrain.model,
        config.towers,
        config.experts,
        embeddings_dir,
        pretrained_dir=stage_dir(pretrain),
        align_dir=RunLayout(config.run_dir).model_dir(config.align_stage_name),
        eval_config=config.eval,
    )


def run_pad(config: PadConfig, cache_root: Path | None = None, force: bool = False) -> dict[str, dict]:
    """Run every phase not yet done; `force` retrains phases 2–3 and the baselines (never phase 1 or encoding,
    which other stages share). Returns each phase's summary by name."""
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    pretrain = pretrain_stage(config)
    summaries = {"pretrain": run_training_stage(pretrain, data_dir)}
    encoded = encode_items(config.text, data_dir, config.run_dir, cache_root)
    summaries["encode"] = {
        "path": str(encoded.path),
        "cache_hit": encoded.cache_hit,
        "encode_seconds": encoded.meta.encode_seconds,
        "dim": encoded.meta.dim,
    }
    if config.needs_alignment_phase:
        summaries["align"] = run_stage(
            stage_job(alignment_recipe(config, pretrain, encoded.path), config, data_dir), force=force
        )
    summaries["experts"] = run_stage(
        stage_job(experts_recipe(config, pretrain, encoded.path), config, data_dir), force=force
    )
    for baseline in config.baselines:
        summaries[baseline] = run_stage(
            stage_job(baseline_recipe(baseline, config, pretrain, encoded.path), config, data_dir), force=force
        )
    return summaries


def tune_prerequisites(config: PadConfig, cache_root: Path | None) -> list[str]:
    """PAD's phase 1 (the pre-trained backbone) and the item text embeddings, computed once for all trials."""
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    pretrain = pretrain_stage(config)
    run_training_stage(pretrain, data_dir)
    encode_items(config.text, data_dir, config.run_dir, cache_root)
    return ["data", f"models/{pretrain.stage_name}", "embeddings"]
