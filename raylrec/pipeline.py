"""The main job: fetch → prepare → ID backbones → text encoding → every configured method → evaluation →
leaderboard (Markdown, CSV, plots under <run_dir>/leaderboard/).

Every stage writes named artifacts under one run directory and is skipped when they already exist,
so rerunning is cheap and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

from raylrec.config import StrictModel, deep_merge, load_config
from raylrec.data.prepare import DataConfig, prepare_dataset
from raylrec.data.prepared import check_readable
from raylrec.errors import ArtifactError, RaylrecError
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


class MethodSpec(StrictModel):
    """One LLM-enhanced method of the pipeline (a `raylrec.methods.METHODS` name), run with the pipeline's
    run directory, data and evaluation protocol."""

    name: str
    preset: str | None = None  # the method's preset or YAML file (default: its own default preset)
    set: dict = {}  # nested overrides on top of the preset


class PipelineConfig(StrictModel):
    run_dir: str = "runs/default"
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    stages: list[StageSpec] = [StageSpec(name="sasrec", preset="sasrec"), StageSpec(name="gru4rec", preset="gru4rec")]
    methods: list[MethodSpec] = []
    # Train the ID backbones side by side, as many at once as the cluster's CPUs hold (each stage reserves its
    # Ray Train workers' CPUs); false trains them one after another.
    concurrent_stages: bool = True
    leaderboard: bool = True

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
    layout = RunLayout(run_dir)
    data_dir = layout.data_dir(data.dataset)
    layout.store.pull(data_dir)
    report_file = data_dir / "data_report.json"
    if report_file.exists():
        check_readable(report_file)  # a damaged report is an error naming it, not a silent re-preparation
        saved = json.loads(report_file.read_text())["config"]
        if saved != data.model_dump(mode="json"):
            raise ArtifactError(f"{data_dir} was prepared with other data settings ({saved}); "
                                "use a new run directory or delete that folder")
        log.info("prepared data found at %s; skipping preparation", data_dir)
        return data_dir
    report = prepare_dataset(data, data_dir, cache_root)
    layout.store.push(data_dir)
    log.info("prepared %s: %s", data.dataset, report["counts"])
    return data_dir


class Progress:
    """One line per pipeline step on stdout: `[run 3/7] training sasrec ...` then its wall time."""

    def __init__(self, total: int):
        self.total, self.step, self.started = total, 0, time.perf_counter()

    @contextmanager
    def __call__(self, title: str):
        self.step += 1
        began = time.perf_counter()
        print(f"[run {self.step}/{self.total}] {title} ...", flush=True)
        yield
        print(f"[run {self.step}/{self.total}] {title}: done in {time.perf_counter() - began:.0f} s "
              f"(total {time.perf_counter() - self.started:.0f} s)", flush=True)


def method_overrides(config: PipelineConfig, spec: MethodSpec) -> dict:
    return deep_merge({"run_dir": config.run_dir, "data": config.data.model_dump(mode="json"),
                       "eval": config.eval.model_dump(mode="json")}, spec.set)


def method_text_configs(config: PipelineConfig) -> list:
    """The distinct item-text encodings the configured methods use (methods with a `text` EncodeConfig)."""
    from raylrec.text.encode import EncodeConfig
    from raylrec.tune.targets import TARGETS

    found = []
    for spec in config.methods:
        if spec.name in TARGETS:
            text = getattr(TARGETS[spec.name].load(spec.preset, method_overrides(config, spec)), "text", None)
            if isinstance(text, EncodeConfig) and text not in found:
                found.append(text)
    return found


def run_pipeline(config: PipelineConfig, cache_root: Path | None = None) -> list[dict]:
    from raylrec.methods import METHODS

    unknown = [m.name for m in config.methods if m.name not in METHODS]
    if unknown:
        raise RaylrecError(f"methods {unknown} are not implemented (available: {', '.join(sorted(METHODS))})")
    texts = method_text_configs(config)
    stages = [config.stage_config(spec) for spec in config.stages]
    side_by_side = config.concurrent_stages and len(stages) > 1  # one step for all the backbones
    progress = Progress(1 + (1 if side_by_side else len(stages)) + len(texts) + len(config.methods)
                        + int(config.leaderboard))
    with progress(f"fetch + prepare {config.data.dataset}"):
        data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    summaries = []
    if side_by_side:
        with progress(f"ID backbones {', '.join(s.stage_name for s in stages)} (concurrently, as CPUs allow)"):
            summaries += run_stages_concurrently(stages, data_dir)
    else:
        for stage in stages:
            with progress(f"ID backbone {stage.stage_name} ({stage.model.name})"):
                summaries.append(run_training_stage(stage, data_dir))
    for text in texts:
        from raylrec.text.encode import encode_items

        with progress(f"text encoding ({text.text.model}, {text.text.pooling} pooling)"):
            encode_items(text, data_dir, config.run_dir, cache_root)
    for spec in config.methods:
        with progress(f"method {spec.name} (all its stages)"):
            result = METHODS[spec.name](spec.preset, method_overrides(config, spec), cache_root, False)
        found = [s for s in (result.values() if isinstance(result, dict) else result or [])
                 if isinstance(s, dict) and "test" in s and "stage" in s]
        # a method re-reports stages it shares with the pipeline (its ID backbone): list each stage once
        summaries += [s for s in found if s["stage"] not in {seen["stage"] for seen in summaries}]
    table = results_table(summaries, config.eval.ks)
    layout = RunLayout(config.run_dir)
    (layout.root / "results.md").write_text(table + "\n")
    layout.store.push(layout.root / "results.md")
    if config.leaderboard:
        from raylrec.leaderboard.core import build_leaderboard

        with progress("leaderboard (tables and plots)"):
            build_leaderboard([config.run_dir])
    return summaries


def run_stages_concurrently(stages: list[StageConfig], data_dir: Path) -> list[dict]:
    """Each stage's Ray Train job launched from its own Ray task; a stage starts once the CPUs its workers reserve
    are free, so a 2-core box trains two 1-worker backbones at a time. Summaries come back in the given order."""
    import ray

    from raylrec.ray_utils import ensure_ray

    ensure_ray()
    capacity = ray.cluster_resources().get("CPU", 1)
    # num_cpus=0: the task only drives the trainer; the trainer's workers hold the stage's CPUs
    train_remotely = ray.remote(num_cpus=0)(train_stage_task)
    log_level = logging.getLogger("raylrec").getEffectiveLevel()
    waiting, running, results = list(enumerate(stages)), {}, {}
    while waiting or running:
        in_use = sum(cpus for _, cpus in running.values())
        while waiting:
            index, stage = waiting[0]
            cpus = stage.train.num_workers * stage.train.cpus_per_worker
            if running and in_use + cpus > capacity:
                break
            waiting.pop(0)
            running[train_remotely.remote(stage, data_dir, log_level)] = (index, cpus)
            in_use += cpus
        finished, _ = ray.wait(list(running), num_returns=1)
        index, _ = running.pop(finished[0])
        results[index] = ray.get(finished[0])  # a failed stage raises here, naming the stage's error
        print(f"  ID backbone {stages[index].stage_name}: done", flush=True)
    return [results[i] for i in range(len(stages))]


def train_stage_task(stage: StageConfig, data_dir: Path, log_level: int) -> dict:
    """A stage's Ray task: logs at the driver's level, so "already done" / "resuming" lines reach the job's output."""
    from raylrec.cli import configure_logging

    configure_logging(log_level)
    return run_training_stage(stage, data_dir)


def results_table(summaries: list[dict], ks: list[int]) -> str:
    """Markdown table of test metrics (full ranking) per trained stage."""
    columns = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks if k > 1]
    lines = ["| model | " + " | ".join(f"test {c}" for c in columns) + " | best epoch | fit wall s | params |",
             "|---" * (len(columns) + 4) + "|"]
    for s in summaries:
        test = s["test"]
        lines.append(f"| {s['stage']} | " + " | ".join(f"{test[c]:.4f}" for c in columns)
                     + f" | {s.get('final_metrics', {}).get('best_epoch', '?')} | {s.get('fit_wall_s', '?')} "
                     f"| {s['trainable_params']:,} |")
    return "\n".join(lines)
