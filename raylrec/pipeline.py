"""The main job: fetch → prepare → ID backbones → text encoding → every configured method → evaluation →
leaderboard (Markdown, CSV, plots under <run_dir>/leaderboard/).

Every stage writes named artifacts under one run directory and is skipped when they already exist,
so rerunning is cheap and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from raylrec.config import (
    StrictModel,
    check_select_metric,
    deep_merge,
    differing_settings,
    preset_path,
    print_config,
)
from raylrec.data.prepare import DataConfig, ensure_prepared
from raylrec.errors import RaylrecError
from raylrec.eval.evaluator import EvalConfig
from raylrec.logging_setup import configure_logging
from raylrec.methods.registry import get_method, registered
from raylrec.storage import DEFAULT_RUN_DIR, RunLayout
from raylrec.train.config import StageConfig
from raylrec.train.spec import StageSpec, resolve_stage
from raylrec.train.stage import run_training_stage

log = logging.getLogger(__name__)


class MethodEntry(StrictModel):
    """One LLM-enhanced method of the pipeline (a name registered in raylrec/methods/registry.py), run with the
    pipeline's run directory, data and evaluation protocol."""

    name: str
    preset: str | None = None  # the method's preset or YAML file (default: its own default preset)
    set: dict = {}  # nested overrides on top of the preset
    # CPUs the method's widest step reserves, for running methods side by side (None: read from its config,
    # the largest num_workers × cpus_per_worker). An entry that runs only some of a method's stages sets its own.
    cpus: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _preset_exists(self) -> MethodEntry:
        if self.preset:
            preset_path(self.preset)
        return self


class PipelineConfig(StrictModel):
    run_dir: str = DEFAULT_RUN_DIR
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    stages: list[StageSpec] = [StageSpec(name="sasrec", preset="sasrec"), StageSpec(name="gru4rec", preset="gru4rec")]
    methods: list[MethodEntry] = []
    # Run the ID backbones and text encodings side by side, then the methods side by side, as many at once as
    # the cluster's CPUs hold (each reserves its Ray Train workers' or actors' CPUs); false runs one at a time.
    side_by_side: bool = True
    leaderboard: bool = True

    @model_validator(mode="after")
    def _stages_are_distinct_and_select_on_computed_metrics(self) -> PipelineConfig:
        names = [spec.name for spec in self.stages]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"stage name(s) {', '.join(map(repr, repeated))} used more than once: each stage "
                "writes models/<name>/, so two would collide; give each its own name"
            )
        for spec in self.stages:  # the stage's preset merged with its settings, against this job's eval.ks
            check_select_metric(
                self.stage_config(spec).train.select_metric,
                self.eval.ks,
                f"stage {spec.name!r} train.select_metric",
                "pipeline",
            )
        return self

    def stage_config(self, spec: StageSpec) -> StageConfig:
        return resolve_stage(spec, self.run_dir, self.data, self.eval)


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
        print(
            f"[run {self.step}/{self.total}] {title}: done in {time.perf_counter() - began:.0f} s "
            f"(total {time.perf_counter() - self.started:.0f} s)",
            flush=True,
        )


def method_overrides(config: PipelineConfig, spec: MethodEntry) -> dict:
    return deep_merge(
        {
            "run_dir": config.run_dir,
            "data": config.data.model_dump(mode="json"),
            "eval": config.eval.model_dump(mode="json"),
        },
        spec.set,
    )


def method_configs(config: PipelineConfig) -> list:
    """Each configured method's resolved config (the method's preset with the pipeline's overrides)."""
    found = registered("method")
    return [
        found[spec.name].load(spec.preset, method_overrides(config, spec)) if spec.name in found else None
        for spec in config.methods
    ]


def check_shared_stages(stages: list[StageConfig], entries: list[MethodEntry], methods: list) -> None:
    """A method's upstream stage (IDLE's ID model, PAD's phase 1, A-LLMRec's backbone) that has the name of a
    pipeline stage must be that stage, setting for setting: else the method finds it trained from other settings
    and fails only after the backbones ran (a Beauty run did, after 22 minutes)."""
    by_name = {stage.stage_name: stage.model_dump(mode="json") for stage in stages}
    problems = []
    for entry, method in zip(entries, methods):
        for field_name in type(method).model_fields:
            spec = getattr(method, field_name)
            if isinstance(spec, StageSpec) and spec.name in by_name:
                upstream = resolve_stage(spec, method.run_dir, method.data, method.eval).model_dump(mode="json")
                problems += [
                    f"method {entry.name} {field_name} = stage {spec.name!r}: {key}: {ours!r} (stages) vs "
                    f"{theirs!r} (method)"
                    for key, ours, theirs in differing_settings(by_name[spec.name], upstream)
                ]
    if problems:
        raise RaylrecError(
            "a method's upstream stage differs from the pipeline stage of the same name; give the method's entry "
            "the stage's settings (its `set:`) or the stage another name:\n  " + "\n  ".join(problems)
        )


def method_text_configs(config: PipelineConfig) -> list:
    """The distinct item-text encodings the configured methods use (methods with a `text` EncodeConfig)."""
    from raylrec.text.encode import EncodeConfig

    found = []
    for method in method_configs(config):
        text = getattr(method, "text", None)
        if isinstance(text, EncodeConfig) and text not in found:
            found.append(text)
    return found


def widest_reservation(config) -> float:
    """CPUs the widest Ray Train stage or task pool of a config (a stage, a method) reserves: the largest
    num_workers × cpus_per_worker in it, at least 1."""
    from pydantic import BaseModel

    found = [1.0]

    def walk(node) -> None:
        if isinstance(node, BaseModel):
            if hasattr(node, "num_workers") and hasattr(node, "cpus_per_worker"):
                found.append(node.num_workers * node.cpus_per_worker)
            for name in type(node).model_fields:
                walk(getattr(node, name))
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)

    walk(config)
    return max(found)


@dataclass
class Job:
    """One unit the pipeline runs side by side with others: a backbone, an encoding or a method."""

    label: str
    cpus: float  # what its Ray Train workers / actors reserve
    run: Callable[[], Any]  # picklable: it runs in a Ray task
    after: tuple[int, ...] = ()  # indices of jobs that must finish first


def run_side_by_side(jobs: list[Job]) -> list:
    """Each job from its own Ray task, started in list order (a job that cannot start yet lets later ones pass)
    once the jobs it comes after are done and the CPUs it reserves are free; so a 2-core box runs two 1-worker
    stages at a time. Results come back in list order; a failed job raises here, naming its error."""
    import ray

    from raylrec.ray_utils import ensure_ray

    ensure_ray()
    capacity = ray.cluster_resources().get("CPU", 1)
    # num_cpus=0: the task only drives its trainer or actors, which hold the job's CPUs
    run_remotely = ray.remote(num_cpus=0)(run_job)
    log_level = logging.getLogger("raylrec").getEffectiveLevel()
    waiting, running, results = list(range(len(jobs))), {}, {}
    while waiting or running:
        in_use = sum(jobs[i].cpus for i in running.values())
        for index in list(waiting):
            job = jobs[index]
            if all(d in results for d in job.after) and (not running or in_use + job.cpus <= capacity):
                waiting.remove(index)
                running[run_remotely.remote(job.run, log_level)] = index
                in_use += job.cpus
        if not running:
            raise RaylrecError(f"jobs {[jobs[i].label for i in waiting]} wait for jobs that never run")
        finished, _ = ray.wait(list(running), num_returns=1)
        index = running.pop(finished[0])
        results[index] = ray.get(finished[0])
        print(f"  {jobs[index].label}: done", flush=True)
    return [results[i] for i in range(len(jobs))]


def run_job(run: Callable[[], Any], log_level: int) -> Any:
    """A job's Ray task: logs at the driver's level, so "already done" / "resuming" lines reach the job's output."""
    configure_logging(log_level)
    return run()


def run_method(name: str, preset: str | None, overrides: dict, cache_root: Path | None) -> Any:
    return get_method(name, "method").train(preset, overrides, cache_root)


def run_pipeline(config: PipelineConfig, cache_root: Path | None = None) -> list[dict]:
    from raylrec.text.encode import encode_items, encode_reservation

    unknown = [m.name for m in config.methods if m.name not in registered("method")]
    if unknown:
        raise RaylrecError(f"methods {unknown} are not registered (available: {', '.join(registered('method'))})")
    texts = method_text_configs(config)
    stages = [config.stage_config(spec) for spec in config.stages]
    for stage in stages:  # in full: a stage spec names only what differs from its preset
        print_config(f"stage {stage.stage_name}", stage)
    methods = method_configs(config)
    check_shared_stages(stages, config.methods, methods)
    side_by_side = config.side_by_side and len(stages) + len(texts) + len(config.methods) > 1
    progress = Progress(
        1
        + (
            min(1, len(stages) + len(texts)) + min(1, len(config.methods))
            if side_by_side
            else len(stages) + len(texts) + len(config.methods)
        )
        + int(config.leaderboard)
    )
    with progress(f"fetch + prepare {config.data.dataset}"):
        data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    # The text encodings first: each is one long Ray Data job that no stage waits for in this step, so started
    # after the backbones had taken every CPU it became the step's tail.
    first = [
        Job(
            f"text encoding ({text.text.model}, {text.text.pooling} pooling)",
            encode_reservation(text),
            partial(encode_items, text, data_dir, config.run_dir, cache_root),
        )
        for text in texts
    ]
    first += [
        Job(
            f"ID backbone {stage.stage_name} ({stage.model.name})",
            widest_reservation(stage),
            partial(run_training_stage, stage, data_dir),
        )
        for stage in stages
    ]
    second = [
        Job(
            f"method {spec.name}" + (f" ({', '.join(spec.set['stages'])})" if "stages" in spec.set else ""),
            spec.cpus or widest_reservation(method),
            partial(run_method, spec.name, spec.preset, method_overrides(config, spec), cache_root),
            # entries of one method (e.g. its stages split in two) run in the order listed
            after=tuple(j for j in range(i) if config.methods[j].name == spec.name),
        )
        for i, (spec, method) in enumerate(zip(config.methods, methods))
    ]
    results: list = []
    for jobs, title in ((first, "ID backbones and text encodings"), (second, "methods")):
        if not jobs:
            continue
        if side_by_side:
            with progress(f"{title}: {', '.join(job.label for job in jobs)} (side by side, as CPUs allow)"):
                results += run_side_by_side(jobs)
        else:
            for job in jobs:
                with progress(job.label):
                    results.append(job.run())
    summaries = list(results[len(texts) : len(first)])
    for result in results[len(first) :]:
        found = [
            s
            for s in (result.values() if isinstance(result, dict) else result or [])
            if isinstance(s, dict) and "test" in s and "stage" in s
        ]
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


def results_table(summaries: list[dict], ks: list[int]) -> str:
    """Markdown table of test metrics (full ranking) per trained stage."""
    columns = [f"{m}@{k}" for m in ("hr", "ndcg") for k in ks if k > 1]
    lines = [
        "| model | " + " | ".join(f"test {c}" for c in columns) + " | best epoch | fit wall s | params |",
        "|---" * (len(columns) + 4) + "|",
    ]
    for s in summaries:
        test = s["test"]
        lines.append(
            f"| {s['stage']} | "
            + " | ".join(f"{test[c]:.4f}" for c in columns)
            + f" | {s.get('final_metrics', {}).get('best_epoch', '?')} | {s.get('fit_wall_s', '?')} "
            f"| {s['trainable_params']:,} |"
        )
    return "\n".join(lines)
