"""Hyperparameter sweeps: Ray Tune trials, each running a method's Ray Train stages.

The pattern Ray documents for Train V2 inside Tune: the trial is a Tune *function* that runs the method
(which builds a `TorchTrainer` per stage); the stage's `RunConfig.callbacks` carries
`ray.tune.integration.ray_train.TuneReportCallback`, which forwards every epoch's `ray.train.report`
(metrics incl. `valid_ndcg@10`) to Tune. `Tuner(trainable=TorchTrainer(...))` does not work under Train V2,
and `ray.train.report` called in the Tune function itself fails the trial, so neither is used here.
The function holds a small CPU share (`tune.with_resources`); its Train workers reserve `trial_cpus` each.

Layout under `<run_dir>/sweeps/<name>/`:
  sweep.yaml              the search space as run (a resumed sweep must match it)
  tune/                   Ray Tune's experiment state (what `Tuner.restore` resumes)
  trials/<trial_id>/      each trial's run directory (stages, metrics, trial_config.yaml); shared
                          artifacts (prepared data, PAD's backbone and text embeddings) are symlinks into
                          the run directory
  sweep_results.csv       one row per trial: status (COMPLETED / EARLY_STOPPED / DIVERGED / ERROR), best validation
                          metric, parameters, error
  seeds-tune/, seeds/seed-<s>/   the best configuration re-run with S seeds, evaluated on test (the best trial,
                          hard-linked, stands for its own seed when it trained to the end under one seed)
  best.json               best trial, its parameters, per-seed valid/test metrics, test mean ± std

Selection uses validation only; the test split is read only from the seed re-runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raylrec.config import deep_merge, flatten, set_dotted
from raylrec.data.prepared import PreparedData
from raylrec.errors import RaylrecError
from raylrec.methods.registry import MethodSpec
from raylrec.ray_utils import ensure_ray
from raylrec.storage import RunLayout, RunStore
from raylrec.train.stage_context import StageContext, stage_context
from raylrec.tune.space import SweepSpec, grid_size, nested, param_space
from raylrec.tune.targets import get_target

log = logging.getLogger(__name__)
TRIAL_FN_CPUS = 0.05  # the Tune function only waits on its TorchTrainer (Tune rejects 0)
FINAL_FLAG = "final_report"
DIVERGED_FLAG = "diverged"


class SweepInterrupted(RaylrecError):
    pass


@dataclass
class SweepPaths:
    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "sweep.yaml"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def seeds(self) -> Path:
        return self.root / "seeds"

    def seed_run(self, seed: int) -> Path:
        return self.seeds / f"seed-{seed}"

    @property
    def results_csv(self) -> Path:
        return self.root / "sweep_results.csv"

    @property
    def best_json(self) -> Path:
        return self.root / "best.json"


@dataclass
class TrialSetup:
    """Everything a trial needs, shipped to it by `tune.with_parameters`."""

    method: str
    preset: str | None
    base_overrides: dict
    shared_location: str  # the run directory (path or URI) holding the shared artifacts
    shared_paths: list[str]
    trials_location: str  # where trial run directories go (path or URI)
    metric: str
    metric_key: str
    cpus_per_worker: float
    cache_root: str | None = None


def link_shared(shared_root: Path, trial_dir: Path, paths: list[str]) -> None:
    """Symlink the shared artifacts into a trial's run directory (so the method finds and skips them)."""
    for relative in paths:
        source, link = (shared_root / relative).resolve(), trial_dir / relative
        if link.is_symlink() or link.exists():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(source, target_is_directory=source.is_dir())


def read_split_metrics(stage_dir: Path, split: str) -> dict:
    path = stage_dir / f"metrics_{split}.json"
    if not path.exists():
        raise RaylrecError(f"{path} missing: the stage did not finish")
    return json.loads(path.read_text())["metrics"]["full"]


def run_trial(config: dict, setup: TrialSetup) -> None:
    """The Tune function: one configuration of the method, trained and validated in its own run directory."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    target = get_target(setup.method)
    seed = config.get("seed")
    name = f"seed-{seed}" if seed is not None else tune.get_context().get_trial_id()
    shared = RunStore(setup.shared_location)
    for relative in setup.shared_paths:  # a trial on a node without the run directory: into its mirror
        shared.pull(shared.root / relative)
    trial_location = f"{setup.trials_location.rstrip('/')}/{name}"
    trial_store = RunStore(trial_location)
    trial_dir = trial_store.root
    trial_dir.mkdir(parents=True, exist_ok=True)
    link_shared(shared.root, trial_dir, setup.shared_paths)
    overrides = deep_merge(setup.base_overrides, config.get("params") or {})
    overrides["run_dir"] = trial_location
    method_config = target.load(setup.preset, overrides)
    (trial_dir / "trial_config.yaml").write_text(method_config.to_yaml())
    trial_store.push(trial_dir / "trial_config.yaml")
    stage = target.stage_name(method_config)
    updates = {"cpus_per_worker": setup.cpus_per_worker}
    if seed is not None:
        updates["seed"] = int(seed)
    cache_root = Path(setup.cache_root) if setup.cache_root else None
    with stage_context(StageContext(callbacks=[TuneReportCallback()], report_stages={stage}, train_updates=updates)):
        target.run(method_config, cache_root)
    valid = read_split_metrics(trial_dir / "models" / stage, "valid")
    done = json.loads((trial_dir / "models" / stage / "DONE.json").read_text())
    # The selected stage's best model on validation (also what a trial whose stage was already done reports);
    # a stage that diverged is flagged, and selection never picks it.
    tune.report(
        {
            setup.metric: valid[setup.metric_key],
            FINAL_FLAG: True,
            "trial_dir": str(trial_dir),
            DIVERGED_FLAG: "diverged_at_epoch" in done,
        }
    )


def default_concurrency(config: Any, trial_cpus: float) -> int:
    """How many trials fit at once: by reserved CPUs, by cores actually used (threads), and by GPUs."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    train = getattr(config, "train", None)
    workers = getattr(train, "num_workers", 1)
    threads = getattr(train, "threads_per_worker", 1)
    limit = min(int(cpus // (TRIAL_FN_CPUS + workers * trial_cpus)), int(cpus // max(1, workers * threads)))
    if gpus > 0 and getattr(train, "use_gpu", "auto") in (True, "auto"):
        limit = min(limit, int(gpus // workers))
    return max(1, limit)


def searcher(spec: SweepSpec, search: str, concurrency: int):
    """Grid and random: Tune's BasicVariantGenerator. optuna / hyperopt: Tune's wrappers, if installed."""
    if search in ("grid", "random"):
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(max_concurrent=concurrency, random_state=spec.seed_base), None
    try:
        if search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            algorithm = OptunaSearch(seed=spec.seed_base)
        else:
            from ray.tune.search.hyperopt import HyperOptSearch

            algorithm = HyperOptSearch(random_state_seed=spec.seed_base)
    except (ImportError, AssertionError) as err:
        raise RaylrecError(
            f"search {search!r} needs the {search} package (pip install {search}); grid and random need nothing extra"
        ) from err
    return algorithm, concurrency


def run_tuner(
    storage: str,
    name: str,
    trainable,
    space: dict,
    spec: SweepSpec,
    search: str,
    num_samples: int,
    concurrency: int,
    scheduler: bool,
    retry_failed: bool,
    trial_failures: int = 1,
):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    path = f"{storage.rstrip('/')}/{name}"
    if tune.Tuner.can_restore(str(path)):
        log.info("resuming the interrupted sweep at %s", path)
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True, restart_errored=retry_failed)
    else:
        algorithm, limit = searcher(spec, search, concurrency)
        asha = None
        if scheduler and spec.scheduler.type == "asha":
            asha = ASHAScheduler(
                time_attr="training_iteration",
                max_t=spec.scheduler.max_t,
                grace_period=spec.scheduler.grace_period,
                reduction_factor=spec.scheduler.reduction_factor,
            )
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=spec.metric,
                mode=spec.mode,
                search_alg=algorithm,
                scheduler=asha,
                num_samples=num_samples,
                max_concurrent_trials=limit,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=storage,
                verbose=1,
                failure_config=tune.FailureConfig(max_failures=trial_failures),
            ),
        )
    return tuner.fit()


def trial_id_of(result) -> str:
    if result.metrics.get("trial_id"):
        return str(result.metrics["trial_id"])
    match = re.search(r"([0-9a-f]{5}_\d{5})", Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def best_of(frame: pd.DataFrame | None, metric: str, mode: str) -> float:
    if frame is None or metric not in frame or frame[metric].dropna().empty:
        return math.nan
    values = frame[metric].dropna()
    return float(values.max() if mode == "max" else values.min())


def short_error(error: BaseException | None) -> str:
    if error is None:
        return ""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def tune_statuses(grid) -> dict[str, str]:
    """Each trial's status in the experiment state Tune saved last (TERMINATED, ERROR; RUNNING, PENDING or
    PAUSED when the sweep was interrupted). The in-memory trials of an interrupted run read TERMINATED,
    because Tune stops them after saving, so the saved state is read back."""
    from ray.tune import ExperimentAnalysis

    try:
        return {trial.trial_id: trial.status for trial in ExperimentAnalysis(grid.experiment_path).trials}
    except Exception as err:  # unreadable state: judge by the results alone
        log.warning("could not read the saved trial states of %s: %s", grid.experiment_path, err)
        return {}


def expected_trials(spec: SweepSpec, search: str) -> int:
    return grid_size(spec) * spec.num_samples if search == "grid" else spec.num_samples


def trial_rows(grid, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: id, status, best validation metric over its reports, its parameters, its error.

    COMPLETED: trained to the end (the final report arrived); EARLY_STOPPED: stopped by ASHA;
    DIVERGED: its training loss went non-finite (flagged in a report, or the error it failed with);
    ERROR: crashed (recorded, the other trials go on); INTERRUPTED: not finished when the sweep stopped.
    Only COMPLETED and EARLY_STOPPED trials are ever selected."""
    statuses = tune_statuses(grid)
    rows = []
    for result in grid:
        params = flatten((result.config or {}).get("params") or {})
        trial_id = trial_id_of(result)
        tune_status = statuses.get(trial_id, "TERMINATED")
        frame = result.metrics_dataframe
        diverged = (
            bool(result.metrics.get(DIVERGED_FLAG))
            or "diverged" in short_error(result.error)
            or (frame is not None and DIVERGED_FLAG in frame and frame[DIVERGED_FLAG].fillna(False).astype(bool).any())
        )
        status = (
            "DIVERGED"
            if diverged
            else "ERROR"
            if result.error is not None or tune_status == "ERROR"
            else "INTERRUPTED"
            if tune_status != "TERMINATED"
            else "COMPLETED"
            if result.metrics.get(FINAL_FLAG)
            else "EARLY_STOPPED"
            if result.metrics
            else "INTERRUPTED"
        )
        row = {
            "trial_id": trial_id,
            "status": status,
            spec.metric: best_of(result.metrics_dataframe, spec.metric, spec.mode),
            "reports": int(result.metrics.get("training_iteration", 0) or 0),
            "error": short_error(result.error),
        }
        row.update({f"param:{k}": json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def pick_best(rows: pd.DataFrame, spec: SweepSpec) -> pd.Series:
    ok = rows[rows["status"].isin(["COMPLETED", "EARLY_STOPPED"]) & rows[spec.metric].notna()]
    if ok.empty:
        raise RaylrecError("every trial of the sweep failed; see the error column of sweep_results.csv")
    return ok.sort_values(spec.metric, ascending=spec.mode == "min", kind="stable").iloc[0]


def params_of(row: pd.Series) -> dict:
    flat = {}
    for column, value in row.items():
        if column.startswith("param:"):
            if isinstance(value, str) and value[:1] in "[{":
                value = json.loads(value)
            elif isinstance(value, (np.integer, np.floating, np.bool_)):
                value = value.item()
            if isinstance(value, float) and math.isnan(value):  # a null in the space (e.g. ρ = median heuristic)
                value = None
            flat[column.removeprefix("param:")] = value
    return flat


def mean_std(values: list[dict]) -> tuple[dict, dict]:
    keys = sorted(set().union(*values)) if values else []
    mean = {k: float(np.mean([v[k] for v in values if k in v])) for k in keys}
    std = {k: float(np.std([v[k] for v in values if k in v], ddof=1)) if len(values) > 1 else 0.0 for k in keys}
    return mean, std


SEARCH_FIELDS = ("method", "preset", "metric", "mode", "search", "num_samples", "scheduler", "fixed", "space")


def spec_record(spec: SweepSpec, dataset: str | None, keys: dict[str, str]) -> str:
    return spec.to_yaml() + yaml.safe_dump({"dataset": dataset, **keys})


def config_fingerprint(config: Any) -> str:
    """The resolved base config every trial starts from (the preset file's content, not its name), minus the run
    directory."""
    settings = {k: v for k, v in config.model_dump(mode="json").items() if k != "run_dir"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_spec_unchanged(paths: SweepPaths, spec: SweepSpec, dataset: str | None, keys: dict[str, str]) -> None:
    """A resumed sweep must search the same space from the same base config on the same data (seeds and
    concurrency may change). `keys`: fingerprints known so far (`config_fingerprint`, `data_fingerprint`);
    a record written before they were kept is compared on the rest."""
    if not paths.spec_file.exists():
        return
    saved = yaml.safe_load(paths.spec_file.read_text()) or {}
    current = {**spec.model_dump(mode="json"), "dataset": dataset, **keys}
    differing = [key for key in (*SEARCH_FIELDS, "dataset") if saved.get(key) != current.get(key)]
    differing += [key for key in keys if key in saved and saved[key] != keys[key]]
    if differing:
        raise RaylrecError(
            f"{paths.root} holds a sweep with another search space, base config or data "
            f"({', '.join(differing)} differ; {paths.spec_file}); give another --name or --run-dir, "
            "or delete that folder"
        )


def validate_space(target: MethodSpec, spec: SweepSpec, base: dict) -> None:
    """Build the config of one point of the space, so a typo in a key fails before any trial starts."""
    point: dict = {}
    for key, domain in spec.space.items():
        kind, args = next(iter(domain.items()))
        set_dotted(point, key, args[0])
    target.check_space(list(spec.space))
    target.load(spec.preset, deep_merge(base, point))


def run_sweep(
    spec: SweepSpec,
    run_dir: str = "runs/default",
    *,
    name: str | None = None,
    dataset: str | None = None,
    cache_root: Path | None = None,
    num_samples: int | None = None,
    seeds: int | None = None,
    search: str | None = None,
    max_concurrent: int | None = None,
    retry_failed: bool = False,
    trial_failures: int = 1,
) -> dict:
    """Run (or resume) the sweep, pick the best trial on validation, re-run it with seeds, evaluate on test.
    `trial_failures`: times Tune restarts a trial whose process died or that raised (its stages then resume from
    their checkpoints); a trial failing more often is recorded as ERROR and the others go on."""
    from ray import tune

    target = get_target(spec.method)
    search = search or spec.search
    spec = spec.model_copy(
        update={
            "search": search,
            "num_samples": num_samples or spec.num_samples,
            "seeds": spec.seeds if seeds is None else seeds,
        }
    )
    store = RunStore(run_dir)
    run_root = store.root
    base = nested(spec.fixed)
    if dataset:
        set_dotted(base, "data.dataset", dataset)
    shared_config = target.load(spec.preset, {**base, "run_dir": str(run_dir)})
    validate_space(target, spec, {**base, "run_dir": str(run_dir)})
    paths = SweepPaths(run_root / "sweeps" / (name or spec.method))
    store.pull(paths.root)  # a sweep resumed from another machine
    dataset = shared_config.data.dataset if hasattr(shared_config, "data") else dataset
    keys = {"config_fingerprint": config_fingerprint(shared_config)}
    check_spec_unchanged(paths, spec, dataset, keys)

    ensure_ray()
    print(f"[sweep {paths.root.name}] shared artifacts (data, prerequisites) in {run_root}", flush=True)
    shared = target.prepare_shared(shared_config, cache_root)
    if dataset:
        keys["data_fingerprint"] = PreparedData(RunLayout(run_dir).data_dir(dataset)).fingerprint
        check_spec_unchanged(paths, spec, dataset, keys)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.spec_file.write_text(spec_record(spec, dataset, keys))
    store.push(paths.spec_file)
    concurrency = max_concurrent or spec.max_concurrent_trials or default_concurrency(shared_config, spec.trial_cpus)
    setup = TrialSetup(
        method=spec.method,
        preset=spec.preset,
        base_overrides=base,
        shared_location=store.locate(run_root),
        shared_paths=shared,
        trials_location=store.locate(paths.trials),
        metric=spec.metric,
        metric_key=spec.metric_key,
        cpus_per_worker=spec.trial_cpus,
        cache_root=str(cache_root) if cache_root else None,
    )
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), {"cpu": TRIAL_FN_CPUS})
    scheduler = f"ASHA on {spec.metric}" if spec.scheduler.type == "asha" else "no early stopping"
    print(
        f"[sweep {paths.root.name}] {spec.search} search over {', '.join(spec.space)}; "
        f"{concurrency} trial(s) at a time; {scheduler}",
        flush=True,
    )
    grid = run_tuner(
        store.locate(paths.root),
        "tune",
        trainable,
        {"params": param_space(spec)},
        spec,
        spec.search,
        spec.num_samples,
        concurrency,
        scheduler=True,
        retry_failed=retry_failed,
        trial_failures=trial_failures,
    )
    rows = trial_rows(grid, spec)
    rows.to_csv(paths.results_csv, index=False)
    store.push(paths.results_csv)
    # Trials are generated lazily (as concurrency allows), so an interrupted sweep may also lack some.
    unfinished = int((rows["status"] == "INTERRUPTED").sum()) + max(0, expected_trials(spec, spec.search) - len(rows))
    if unfinished:
        raise SweepInterrupted(
            f"sweep {paths.root} interrupted with {unfinished} unfinished trial(s); rerun the same command to resume it"
        )
    failed = rows[rows["status"] == "ERROR"]
    for _, row in failed.iterrows():
        log.warning("trial %s failed: %s", row["trial_id"], row["error"])
    best = pick_best(rows, spec)
    best_params = params_of(best)
    summary: dict = {
        "method": spec.method,
        "sweep": paths.root.name,
        "metric": spec.metric,
        "mode": spec.mode,
        "search": spec.search,
        "trials": len(rows),
        "failed": len(failed),
        "diverged": int((rows["status"] == "DIVERGED").sum()),
        "early_stopped": int((rows["status"] == "EARLY_STOPPED").sum()),
        "best_trial": best["trial_id"],
        "best_valid": float(best[spec.metric]),
        "best_params": best_params,
        "results_csv": str(paths.results_csv),
        "seeds": [],
    }
    if spec.seeds:
        best_config = target.load(spec.preset, deep_merge({**base, "run_dir": str(run_dir)}, nested(best_params)))
        summary.update(run_seed_reruns(spec, target, best, best_config, setup, store, paths, concurrency, retry_failed))
    paths.best_json.write_text(json.dumps(summary, indent=2, default=str))
    store.push(paths.best_json)
    return summary


def reusable_trial_seed(target: MethodSpec, best: pd.Series, best_config: Any) -> int | None:
    """The seed at which the best trial already is a seed re-run: it trained to the end (not stopped by ASHA) and
    one seed governs all of it. A re-run at that seed would repeat it exactly."""
    if best["status"] != "COMPLETED":
        return None
    return target.trial_seed(best_config)


def copy_run(source: Path, destination: Path) -> None:
    """A trial's run directory as a seed re-run: hard links where the filesystem allows (no second copy of its
    checkpoints), symlinks to shared artifacts kept as symlinks."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    partial = destination.with_name(destination.name + ".partial")  # never a half-copied seed folder
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, symlinks=True, copy_function=link_or_copy)
    partial.rename(destination)


def run_seed_reruns(
    spec: SweepSpec,
    target: MethodSpec,
    best: pd.Series,
    best_config: Any,
    setup: TrialSetup,
    store: RunStore,
    paths: SweepPaths,
    concurrency: int,
    retry_failed: bool,
) -> dict:
    """The best configuration at `spec.seeds` seeds, evaluated on test: per-seed metrics and test mean ± std.
    The best trial itself stands for the seed it ran at (when it qualifies): copied to that seed's folder, not
    trained twice."""
    from ray import tune

    seed_values = [spec.seed_base + i for i in range(spec.seeds)]
    stage = target.stage_name(best_config)
    reused_seed = reusable_trial_seed(target, best, best_config)
    stage_dirs = {seed: paths.seed_run(seed) / "models" / stage for seed in seed_values}
    if reused_seed in stage_dirs:
        seed_dir = paths.seed_run(reused_seed)
        if not seed_dir.exists():
            store.pull(paths.trials / best["trial_id"])  # written wherever the trial ran
            copy_run(paths.trials / best["trial_id"], seed_dir)
            store.push(seed_dir)
        log.info(
            "seed %s: the best trial %s ran at this seed; %s holds its run", reused_seed, best["trial_id"], seed_dir
        )
    rerun = [seed for seed in seed_values if seed != reused_seed]
    if rerun:
        seed_setup = TrialSetup(**{**setup.__dict__, "trials_location": store.locate(paths.seeds)})
        seed_trainable = tune.with_resources(tune.with_parameters(run_trial, setup=seed_setup), {"cpu": TRIAL_FN_CPUS})
        seed_space = {"params": nested(params_of(best)), "seed": tune.grid_search(rerun)}
        seed_grid = run_tuner(
            store.locate(paths.root),
            "seeds-tune",
            seed_trainable,
            seed_space,
            spec,
            "grid",
            1,
            concurrency,
            scheduler=False,
            retry_failed=retry_failed,
        )
        store.pull(paths.seeds)  # the seed runs' metrics, written wherever their trials ran
        seed_rows = trial_rows(seed_grid, spec)
        if (seed_rows["status"] == "INTERRUPTED").any() or len(seed_rows) < len(rerun):
            raise SweepInterrupted(f"the seed re-runs of {paths.root} were interrupted; rerun the same command")
        if seed_grid.num_errors:
            log.warning("%d seed re-run(s) failed", seed_grid.num_errors)
    seeds, tests, valids = [], [], []
    for seed, stage_dir in stage_dirs.items():
        try:
            valid, test = read_split_metrics(stage_dir, "valid"), read_split_metrics(stage_dir, "test")
        except RaylrecError as err:
            log.warning("seed %s: %s", seed, err)
            seeds.append({"seed": seed, "error": str(err)})
            continue
        valids.append(valid)
        tests.append(test)
        seeds.append(
            {
                "seed": seed,
                "dir": str(stage_dir),
                "valid": valid,
                "test": test,
                **({"reused_trial": best["trial_id"]} if seed == reused_seed else {}),
            }
        )
    test_mean, test_std = mean_std(tests)
    return {"seeds": seeds, "test_mean": test_mean, "test_std": test_std, "valid_mean": mean_std(valids)[0]}


def format_summary(summary: dict, rows: pd.DataFrame | None = None) -> str:
    lines = [
        f"sweep {summary['sweep']} ({summary['method']}, {summary['search']}): {summary['trials']} trials, "
        f"{summary['failed']} failed, {summary.get('diverged', 0)} diverged (never selected), "
        f"{summary['early_stopped']} stopped early by ASHA",
        f"best on validation: trial {summary['best_trial']} {summary['metric']} = {summary['best_valid']:.4f}",
        "  " + ", ".join(f"{k}={v}" for k, v in summary["best_params"].items()),
    ]
    if summary.get("test_mean"):
        n = sum(1 for s in summary["seeds"] if "test" in s)
        reused = next((s["seed"] for s in summary["seeds"] if "reused_trial" in s), None)
        lines.append(
            f"best config at {n} seed(s){f' (seed {reused}: the best trial itself)' if reused else ''}, "
            "test (full ranking), mean ± std:"
        )
        for key in ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"):
            if key in summary["test_mean"]:
                lines.append(f"  {key:8s} {summary['test_mean'][key]:.4f} ± {summary['test_std'][key]:.4f}")
    return "\n".join(lines)
