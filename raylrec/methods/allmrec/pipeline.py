"""A-LLMRec end to end: backbone (frozen CF model) → stage 1 → stage 2 → inference.

Every step writes named artifacts under the run directory and reads the previous step's by name:
  <run_dir>/models/<backbone.name>/       the ID backbone (SASRec with BCE by default), shared with other methods
  <run_dir>/models/<name>-stage1/         encoders/decoders + fine-tuned SBERT, joint_embeddings.safetensors (e, q)
  <run_dir>/models/<name>-stage2/         F_U, F_I (model.safetensors: projectors only), projector_config.json
  <run_dir>/models/<name>-eval/           metrics_<split>_<variant>.json, metrics_<split>_backbone.json,
                                          predictions_<split>_<variant>.csv
A finished step (DONE.json) is skipped, an interrupted stage resumes from its latest checkpoint, and a later
stage run alone (`--stage stage2`) reads the earlier stages' artifacts.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from raylrec.data.prepare import ensure_prepared
from raylrec.errors import ArtifactError
from raylrec.methods.allmrec.config import ALLMRecConfig
from raylrec.methods.allmrec.inference import run_inference
from raylrec.methods.allmrec.stage1 import JOINT_FILE, Stage1Recipe
from raylrec.methods.allmrec.stage2 import Stage2Recipe
from raylrec.ray_utils import ensure_ray
from raylrec.storage import RunLayout
from raylrec.train.config import StageConfig
from raylrec.train.spec import resolve_stage
from raylrec.train.stage import DONE_FILE, StageJob, prepare_backbone, run_stage, run_training_stage, stage_dir

log = logging.getLogger(__name__)


def backbone_stage(config: ALLMRecConfig) -> StageConfig:
    return resolve_stage(config.backbone, config.run_dir, config.data, config.eval)


def stage1_recipe(config: ALLMRecConfig, cache_root: Path | None = None) -> Stage1Recipe:
    return Stage1Recipe(
        config.stage1_name, config.stage1, stage_dir(backbone_stage(config)), str(cache_root) if cache_root else None
    )


def stage2_recipe(config: ALLMRecConfig, cache_root: Path | None = None) -> Stage2Recipe:
    layout = RunLayout(config.run_dir)
    return Stage2Recipe(
        config.stage2_name,
        config.stage2,
        stage_dir(backbone_stage(config)),
        layout.model_dir(config.stage1_name),
        str(cache_root) if cache_root else None,
        config.eval.warm_cold_fraction,
    )


def require_done(path: Path, what: str) -> None:
    if not (path / DONE_FILE).exists():
        raise ArtifactError(
            f"{what} has no finished artifact at {path}; run it first (raylrec train --method allmrec --stage {what})"
        )


def run_allmrec(config: ALLMRecConfig, cache_root: Path | None = None, force: bool = False) -> dict[str, dict]:
    """Run the configured steps not yet done; `force` redoes them (never the shared backbone)."""
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    layout = RunLayout(config.run_dir)
    backbone = backbone_stage(config)
    summaries: dict[str, dict] = {}
    timings: dict[str, float] = {}

    started = time.perf_counter()
    summaries["backbone"] = run_training_stage(backbone, data_dir)
    timings["backbone"] = time.perf_counter() - started
    stage1_dir = layout.model_dir(config.stage1_name)
    if "stage1" in config.stages:
        started = time.perf_counter()
        summaries["stage1"] = run_stage(
            StageJob.of_method(stage1_recipe(config, cache_root), config.stage1.train, config, data_dir), force=force
        )
        timings["stage1"] = time.perf_counter() - started
    if "stage2" in config.stages or "inference" in config.stages:
        require_done(stage1_dir, "stage1")
        if not (stage1_dir / JOINT_FILE).exists():
            raise ArtifactError(f"{stage1_dir / JOINT_FILE} is missing: rerun stage 1 with --force")
    recipe2 = stage2_recipe(config, cache_root)
    stage2_dir = layout.model_dir(config.stage2_name)
    if "stage2" in config.stages:
        started = time.perf_counter()
        summaries["stage2"] = run_stage(StageJob.of_method(recipe2, config.stage2.train, config, data_dir), force=force)
        timings["stage2"] = time.perf_counter() - started
    if "inference" in config.stages:
        require_done(stage2_dir, "stage2")
        ensure_ray()
        started = time.perf_counter()
        summaries["inference"] = run_inference(
            recipe2,
            data_dir,
            stage2_dir,
            stage_dir(backbone),
            layout.model_dir(config.eval_name),
            config.inference,
            config.eval,
            seed=config.data.seed,
            force=force,
            run_dir=config.run_dir,
        )
        timings["inference"] = time.perf_counter() - started
    summaries["wall_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return summaries


def tune_prerequisites(config: ALLMRecConfig, cache_root: Path | None) -> list[str]:
    """The prepared data and the frozen ID backbone, computed once for all of a sweep's trials."""
    return prepare_backbone(config, config.backbone, cache_root)
