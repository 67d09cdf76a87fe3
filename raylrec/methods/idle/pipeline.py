"""IDLE-Adapter end to end: the frozen ID model's stage (trained if missing) → the IDLE-Adapter stage.

  <run_dir>/models/<id_model.name>/   the ID backbone (an ID-model stage, shared with other methods)
  <run_dir>/models/<name>/            adapter + item head (model.safetensors), metrics, idle_config.json
A finished stage (DONE.json) is skipped and an interrupted one resumes from its latest checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from raylrec.data.prepare import ensure_prepared
from raylrec.methods.idle.config import IdleConfig
from raylrec.methods.idle.recipe import IdleRecipe
from raylrec.text.registry import resolve_model
from raylrec.train.spec import resolve_stage
from raylrec.train.stage import StageJob, prepare_backbone, run_stage, run_training_stage, stage_dir


def idle_job(config: IdleConfig, data_dir: Path, cache_root: Path | None = None) -> StageJob:
    id_stage = resolve_stage(config.id_model, config.run_dir, config.data, config.eval)
    # Resolve (and for GGUF decoders convert, once) in the driver, so workers only read a local folder.
    resolved = resolve_model(config.backbone, cache_root)
    recipe = IdleRecipe(config, stage_dir(id_stage), resolved.path, resolved.family)
    return StageJob.of_method(recipe, train_settings(config, resolved.family), config, data_dir)


def train_settings(config: IdleConfig, family: str):
    """The stage's training settings: decoder backbones train under DeepSpeed unless told otherwise."""
    if family == "decoder" and config.train.deepspeed is None and config.decoder_deepspeed is not None:
        return config.train.model_copy(update={"deepspeed": config.decoder_deepspeed})
    return config.train


def run_idle(config: IdleConfig, cache_root: Path | None = None, force: bool = False) -> dict[str, dict]:
    """Train what is not done yet; `force` retrains the IDLE stage (never the shared ID model)."""
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    id_stage = resolve_stage(config.id_model, config.run_dir, config.data, config.eval)
    summaries = {"id_model": run_training_stage(id_stage, data_dir)}
    summaries["idle"] = run_stage(idle_job(config, data_dir, cache_root), force=force)
    return summaries


def tune_prerequisites(config: IdleConfig, cache_root: Path | None) -> list[str]:
    """The prepared data and the frozen ID backbone, computed once for all of a sweep's trials."""
    return prepare_backbone(config, config.id_model, cache_root)
