"""Ray Tune sweeps on tiny data: trials run Ray Train stages, a crashing trial is recorded as failed while
the others complete, an interrupted sweep resumes, and the best config is re-run with seeds on test."""

import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raylrec.errors import RaylrecError
from raylrec.tune.space import SweepSpec, grid_size, load_space, param_space
from raylrec.tune.sweep import SweepInterrupted, run_sweep, validate_space
from raylrec.tune.targets import get_target, targets

SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"
TINY_MODEL = dict(
    name="sasrec", hidden_size=8, max_len=6, num_layers=1, num_heads=2, inner_size=8, dropout=0.1, attn_dropout=0.1
)


def tiny_base(tmp_path, synthetic_log) -> Path:
    """A stage config on the session's synthetic data (the same data settings as `prepared_dir`)."""
    base = {
        "data": {
            "dataset": "synthetic",
            "interactions_path": str(synthetic_log),
            "format": "csv",
            "negatives": [5, 10],
            "num_blocks": 2,
        },
        "eval": {"num_negatives": [5, 10], "length_edges": [5, 10]},
        "model": TINY_MODEL,
        "train": {"max_epochs": 2, "batch_size": 16, "max_failures": 0},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def run_dir_with_data(tmp_path, prepared_dir) -> Path:
    run_dir = tmp_path / "run"
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "synthetic").symlink_to(prepared_dir, target_is_directory=True)  # prepared once per session
    return run_dir


def interrupt_when(condition, timeout: float = 400.0) -> threading.Thread:
    """Send this process SIGUSR1 — Ray Tune's graceful stop, like Ctrl+C — once `condition()` holds."""

    def watch():
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_shipped_spaces_load_and_build_tune_domains():
    for path in sorted(SPACES.glob("*.yaml")):
        spec = load_space(path)
        assert spec.metric.startswith("valid_")
        assert param_space(spec) and grid_size(spec) >= 1
        if spec.method in targets():  # every key exists in the method's config (built without Ray)
            validate_space(get_target(spec.method), spec, {})
    assert {p.stem for p in SPACES.glob("*.yaml")} >= {"sasrec", "gru4rec", "pad", "allmrec", "idle"}


def test_space_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="valid_"):
        SweepSpec(method="sasrec", metric="test_ndcg@10", space={"train.lr": {"grid": [0.1]}})
    with pytest.raises(ValueError, match="exactly one of"):
        SweepSpec(method="sasrec", space={"train.lr": {"grid": [0.1], "choice": [0.2]}})
    with pytest.raises(RaylrecError, match="cannot vary"):
        get_target("pad").check_space(["pretrain.train.lr"])


def test_sweep_failed_trial_interrupt_resume_and_seeds(ray_session, prepared_dir, synthetic_log, tmp_path):
    run_dir = run_dir_with_data(tmp_path, prepared_dir)
    # lr -1 makes the optimizer raise inside the Ray Train worker: a real crash of that trial.
    spec = SweepSpec(
        method="sasrec",
        preset=str(tiny_base(tmp_path, synthetic_log)),
        seeds=1,
        max_concurrent_trials=1,
        scheduler={"grace_period": 1},
        space={"train.lr": {"grid": [0.01, 0.02, -1.0]}},
    )
    sweep = run_dir / "sweeps" / "tiny"
    first_done = lambda: any(sweep.glob("trials/*/models/sasrec/DONE.json"))  # noqa: E731
    watcher = interrupt_when(first_done)
    # trial_failures=0: the lr -1 crash is deterministic, a retry would only repeat it
    with pytest.raises(SweepInterrupted, match="rerun the same command"):
        run_sweep(spec, str(run_dir), name="tiny", trial_failures=0)
    watcher.join(timeout=5)
    interrupted = pd.read_csv(sweep / "sweep_results.csv")
    # Unfinished: a trial cut short, or (stopped between trials) one not generated yet.
    assert (interrupted["status"] == "INTERRUPTED").any() or len(interrupted) < 3
    done = next(sweep.glob("trials/*/models/sasrec/DONE.json"))
    stamp = done.stat().st_mtime_ns

    summary = run_sweep(spec, str(run_dir), name="tiny", trial_failures=0)  # the same command resumes (Tuner.restore)
    assert done.stat().st_mtime_ns == stamp  # the finished trial was not retrained
    rows = pd.read_csv(sweep / "sweep_results.csv")
    assert len(rows) == 3
    statuses = dict(zip(rows["param:train.lr"], rows["status"]))
    assert statuses[-1.0] == "ERROR" and "learning rate" in rows.loc[rows["param:train.lr"] == -1.0, "error"].item()
    assert statuses[0.01] in ("COMPLETED", "EARLY_STOPPED") and statuses[0.02] in ("COMPLETED", "EARLY_STOPPED")
    assert summary["failed"] == 1 and summary["best_params"]["train.lr"] in (0.01, 0.02)
    assert summary["best_valid"] == pytest.approx(rows["valid_ndcg@10"].max())
    # Trials share the prepared data through a symlink and report every epoch to Tune (ASHA's input).
    trial_dir = done.parents[2]
    assert (trial_dir / "data").is_symlink()
    # The best config re-run with one seed, on test.
    seed = summary["seeds"][0]
    assert seed["seed"] == 2020 and Path(seed["dir"], "metrics_test.json").exists()
    assert summary["test_mean"]["ndcg@10"] == pytest.approx(seed["test"]["ndcg@10"])
    best = json.loads((sweep / "best.json").read_text())
    assert best["best_trial"] == summary["best_trial"]


@pytest.mark.slow  # ≈ 55 s; test_sweep_failed_trial_interrupt_resume_and_seeds covers the sweep in the default run
def test_optuna_search_runs_a_tiny_sweep(ray_session, prepared_dir, synthetic_log, tmp_path, caplog):
    """A search algorithm from Tune's library (its Optuna wrapper, TPE) proposing from a continuous domain; the
    best trial (trained to the end at the preset's seed, 2020) stands for that seed, so only 2021 is re-run; the
    TensorBoard logger's per-report renaming notes stay out of the log."""
    caplog.set_level(logging.INFO)
    run_dir = run_dir_with_data(tmp_path, prepared_dir)
    spec = SweepSpec(
        method="sasrec",
        preset=str(tiny_base(tmp_path, synthetic_log)),
        search="optuna",
        num_samples=2,
        seeds=2,
        max_concurrent_trials=1,
        scheduler={"type": "none"},
        space={"train.lr": {"loguniform": [0.005, 0.05]}},
    )
    summary = run_sweep(spec, str(run_dir), name="tpe")
    sweep = run_dir / "sweeps" / "tpe"
    rows = pd.read_csv(sweep / "sweep_results.csv")
    assert len(rows) == 2 and set(rows["status"]) == {"COMPLETED"}
    assert rows["param:train.lr"].between(0.005, 0.05).all() and rows["param:train.lr"].nunique() == 2
    assert summary["best_params"]["train.lr"] in rows["param:train.lr"].tolist()
    reused, rerun = summary["seeds"]
    assert reused["seed"] == 2020 and reused["reused_trial"] == summary["best_trial"]
    assert reused["valid"]["ndcg@10"] == pytest.approx(summary["best_valid"])
    # Seed 2020's folder is the best trial's run, hard-linked (same files, not retrained).
    trial_stage = sweep / "trials" / summary["best_trial"] / "models" / "sasrec"
    assert Path(reused["dir"]) == sweep / "seeds" / "seed-2020" / "models" / "sasrec"
    assert os.path.samefile(Path(reused["dir"], "DONE.json"), trial_stage / "DONE.json")
    assert (sweep / "seeds" / "seed-2020" / "data").is_symlink()
    assert rerun["seed"] == 2021 and "reused_trial" not in rerun and Path(rerun["dir"], "metrics_test.json").exists()
    assert [json.loads(p.read_text())["seed"] for p in (sweep / "seeds-tune").glob("*/params.json")] == [2021]
    assert summary["test_mean"]["ndcg@10"] == pytest.approx((reused["test"]["ndcg@10"] + rerun["test"]["ndcg@10"]) / 2)
    assert any(sweep.rglob("events.out.tfevents.*"))  # TensorBoard files are still written
    assert not [r for r in caplog.records if r.name.startswith("tensorboardX")]


def test_tune_cli_names_a_missing_space_or_method(tmp_path, capsys):
    from raylrec.cli import main

    assert main(["tune", "--space", str(tmp_path / "nope.yaml")]) == 1
    assert "not found" in capsys.readouterr().err
    space = tmp_path / "other.yaml"
    space.write_text("method: morec2\nspace: {train.lr: {grid: [0.1]}}\n")
    assert main(["tune", "--space", str(space), "--run-dir", str(tmp_path / "run")]) == 1
    assert "no sweep target for method 'morec2'" in capsys.readouterr().err
