"""The main job: fetch → prepare → train the ID backbones → evaluate → results table.

Every stage writes named artifacts under one run directory and is skipped when they already exist,
so rerunning is cheap and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from raylrec.config import StrictModel, load_config
from raylrec.data.prepare import DataConfig, prepare_dataset
from raylrec.errors import ArtifactError
from raylrec.eval.evaluator import EvalConfig
from raylrec.models.base import ModelConfig
from raylrec.paths import RunLayout
from raylrec.train.config import StageConfig, TrainConfig
from raylrec.train.stage import run_training_stage

log = logging.getLogger(__name__)


class StageSpec(StrictModel):
    """One ID-model stage of the pipeline: a stage preset (or file), optionally with its own model/train."""

    name: str
    preset: str | None = None
    model: ModelConfig | None = None
    train: TrainConfig | None = None


class PipelineConfig(StrictModel):
    run_dir: str = "runs/default"
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    stages: list[StageSpec] = [StageSpec(name="sasrec", preset="sasrec"), StageSpec(name="gru4rec", preset="gru4rec")]

    def stage_config(self, spec: StageSpec) -> StageConfig:
        return resolve_stage(spec, self.run_dir, self.data, self.eval)


def resolve_stage(spec: StageSpec, run_dir: str, data: DataConfig, eval_config: EvalConfig) -> StageConfig:
    """The stage's preset with the run directory, data and evaluation protocol of the job it belongs to."""
    base = load_config(StageConfig, spec.preset) if spec.preset else StageConfig()
    return base.model_copy(update={
        "run_dir": run_dir, "name": spec.name, "data": data, "eval": eval_config,
        "model": spec.model or base.model, "train": spec.train or base.train})


def ensure_prepared(data: DataConfig, run_dir: str, cache_root: Path | None = None) -> Path:
    """Prepare the dataset into the run directory once; refuse to silently re-prepare with other settings."""
    data_dir = RunLayout(run_dir).data_dir(data.dataset)
    report_file = data_dir / "data_report.json"
    if report_file.exists():
        saved = json.loads(report_file.read_text())["config"]
        if saved != data.model_dump(mode="json"):
            raise ArtifactError(f"{data_dir} was prepared with other data settings ({saved}); "
                                "use a new run directory or delete that folder")
        log.info("prepared data found at %s; skipping preparation", data_dir)
        return data_dir
    report = prepare_dataset(data, data_dir, cache_root)
    log.info("prepared %s: %s", data.dataset, report["counts"])
    return data_dir


def run_pipeline(config: PipelineConfig, cache_root: Path | None = None) -> list[dict]:
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    summaries = []
    for spec in config.stages:
        log.info("stage %s: training %s", spec.name, spec.model.name)
        summaries.append(run_training_stage(config.stage_config(spec), data_dir))
    table = results_table(summaries, config.eval.ks)
    (RunLayout(config.run_dir).root / "results.md").write_text(table + "\n")
    return summaries


def results_table(summaries: list[dict], ks: list[int]) -> str:
    """Markdown table of test metrics (full ranking) per trained stage."""
    columns = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks if k > 1]
    lines = ["| model | " + " | ".join(f"test {c}" for c in columns) + " | best epoch | fit wall s | params |",
             "|---" * (len(columns) + 4) + "|"]
    for s in summaries:
        test = s["test"]
        lines.append(f"| {s['stage']} | " + " | ".join(f"{test[c]:.4f}" for c in columns)
                     + f" | {s['final_metrics'].get('best_epoch', '?')} | {s.get('fit_wall_s', '?')} "
                     f"| {s['trainable_params']:,} |")
    return "\n".join(lines)
