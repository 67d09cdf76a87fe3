"""A stage named inside a larger config (the pipeline's ID backbones, a method's backbone or phase 1): a stage
preset plus the settings that differ from it, resolved against the run directory, data and evaluation protocol
of the job it belongs to."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError, model_validator

from raylrec.config import StrictModel, load_config, preset_path, read_preset, validation_problems
from raylrec.data.prepare import DataConfig
from raylrec.errors import RaylrecError
from raylrec.eval.evaluator import EvalConfig
from raylrec.models.base import ModelConfig
from raylrec.train.config import StageConfig, TrainConfig


class StageSpec(StrictModel):
    """One ID-model stage of the pipeline: a stage preset (or file), and settings that differ from it. Given as a
    string, it names a preset holding a whole spec (e.g. `_sasrec-main`, the main job's SASRec stage)."""

    name: str
    preset: str | None = None
    model: dict[str, Any] = {}  # ModelConfig keys, over the preset's model settings
    train: dict[str, Any] = {}  # TrainConfig keys, over the preset's training settings

    @model_validator(mode="before")
    @classmethod
    def _spec_preset(cls, value: Any) -> Any:
        return read_preset(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _overrides_are_settings(self) -> StageSpec:
        ModelConfig(**self.model)  # unknown keys and wrong types fail where the spec is loaded
        TrainConfig(**self.train)
        if self.preset:
            preset_path(self.preset)  # an unknown preset name fails here, naming the shipped ones
        return self


def resolve_stage(spec: StageSpec, run_dir: str, data: DataConfig, eval_config: EvalConfig) -> StageConfig:
    """The stage's preset with the run directory, data and evaluation protocol of the job it belongs to."""
    base = load_config(StageConfig, spec.preset) if spec.preset else StageConfig()
    try:
        return StageConfig(
            run_dir=run_dir,
            name=spec.name,
            data=data,
            eval=eval_config,
            model=ModelConfig(**{**base.model.model_dump(), **spec.model}),
            train=TrainConfig(**{**base.train.model_dump(), **spec.train}),
        )
    except ValidationError as err:
        raise RaylrecError(
            f"stage {spec.name!r} (preset {spec.preset}, with its model/train settings): {validation_problems(err)}"
        ) from err
