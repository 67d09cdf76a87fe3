"""Reliability (docs/reliability.md): bad inputs fail at load time with one clear line; stages, prepared data and
sweeps are keyed on their content; methods still share a backbone stage trained with the same settings; a killed
`raylrec run` driver and a killed Ray Tune trial are recovered from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from raylrec.cli import main
from raylrec.config import load_config, parse_overrides
from raylrec.errors import ArtifactError, RaylrecError
from raylrec.pipeline import PipelineConfig

REPO = Path(__file__).resolve().parents[1]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raylrec: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ---------- bad inputs: one clear line at config load ----------


def test_select_metric_outside_eval_ks_fails_at_load(tmp_path, capsys):
    assert main(["train", "--model", "sasrec", "--run-dir", str(tmp_path), "--set", "train.select_metric=ndcg@50"]) == 1
    err = one_line_error(capsys)
    assert "train.select_metric 'ndcg@50' needs 50 in eval.ks" in err and "ndcg@10" in err


def test_select_metric_typo_fails_at_load(tmp_path, capsys):
    assert (
        main(["train", "--method", "allmrec", "--run-dir", str(tmp_path), "--set", "stage2.train.select_metric=ndgc@5"])
        == 1
    )
    assert "stage2.train.select_metric 'ndgc@5' is not a validation metric" in one_line_error(capsys)


def test_pipeline_stage_select_metric_is_checked_against_the_jobs_eval_ks():
    with pytest.raises(RaylrecError, match=r"stage 'gru4rec' train\.select_metric 'hr@20' needs 20 in eval\.ks"):
        load_config(
            PipelineConfig,
            "default",
            {
                "eval": {"ks": [1, 5, 10]},
                "stages": [{"name": "gru4rec", "preset": "gru4rec", "train": {"select_metric": "hr@20"}}],
            },
        )


def test_data_columns_typo_names_the_field(tmp_path, capsys):
    assert (
        main(
            [
                "data",
                "prepare",
                "mine",
                "--run-dir",
                str(tmp_path),
                "--set",
                "interactions_path=x.csv",
                "--set",
                "columns={user: uid, itme: iid}",
            ]
        )
        == 1
    )
    err = one_line_error(capsys)
    assert "columns" in err and "'itme'" in err and "user, item, rating, timestamp" in err


def test_duplicate_stage_names_are_refused():
    stages = [{"name": "sasrec", "preset": "sasrec"}, {"name": "sasrec", "preset": "gru4rec"}]
    with pytest.raises(RaylrecError, match="stage name\\(s\\) 'sasrec' used more than once"):
        load_config(PipelineConfig, "default", {"stages": stages})


@pytest.mark.parametrize(
    "pair, message",
    [
        ("train.lr", "must look like key.sub=value"),
        ("=3", "is not a dotted field name"),
        ("train..lr=3", "is not a dotted field name"),
        ("train.lr=[0.1, 0.2", "the value is not valid YAML"),
    ],
)
def test_malformed_set_is_one_clear_line(tmp_path, capsys, pair, message):
    assert main(["train", "--model", "sasrec", "--run-dir", str(tmp_path), "--set", pair]) == 1
    assert message in one_line_error(capsys)


def test_conflicting_set_is_one_clear_line():
    with pytest.raises(RaylrecError, match="conflicts with an earlier --set"):
        parse_overrides(["train=3", "train.lr=0.1"])


def test_invalid_yaml_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\nstages:\n  - {name: a, preset: sasrec\n")
    assert main(["run", "--config", str(bad)]) == 1
    err = one_line_error(capsys)
    assert str(bad) in err and "not valid YAML (line" in err


def test_unknown_preset_names_are_one_clear_line(tmp_path, capsys):
    assert main(["run", "--preset", "defualt"]) == 1
    assert "'defualt' is neither a YAML file nor a preset; presets: " in one_line_error(capsys)
    with pytest.raises(RaylrecError, match="'sasrek' is neither a YAML file nor a preset"):
        load_config(PipelineConfig, "default", {"stages": [{"name": "s", "preset": "sasrek"}]})
    with pytest.raises(RaylrecError, match="'pad-papr' is neither a YAML file nor a preset"):
        load_config(PipelineConfig, "default", {"methods": [{"name": "pad", "preset": "pad-papr"}]})


# ---------- content keys ----------


def test_sweep_refuses_a_changed_base_config_or_data(tmp_path):
    from raylrec.tune.space import SweepSpec
    from raylrec.tune.sweep import SweepPaths, check_spec_unchanged, spec_record

    spec = SweepSpec(method="sasrec", space={"train.lr": {"grid": [0.1, 0.2]}})
    paths = SweepPaths(tmp_path)
    keys = {"config_fingerprint": "aaaa", "data_fingerprint": "dddd"}
    paths.spec_file.write_text(spec_record(spec, "ml-100k", keys))
    check_spec_unchanged(paths, spec, "ml-100k", keys)  # the same sweep resumes
    check_spec_unchanged(paths, spec, "ml-100k", {"config_fingerprint": "aaaa"})  # data not known yet
    for changed in ({**keys, "config_fingerprint": "bbbb"}, {**keys, "data_fingerprint": "eeee"}):
        with pytest.raises(RaylrecError, match="another search space, base config or data .*another --name"):
            check_spec_unchanged(paths, spec, "ml-100k", changed)


def test_prepared_data_is_keyed_on_the_raw_files_content(prepared_dir, synthetic_log, tmp_path):
    from raylrec.data.prepare import DataConfig, data_fingerprint, ensure_prepared

    log = tmp_path / "log.csv"
    shutil.copy(synthetic_log, log)
    config = DataConfig(dataset="synthetic", interactions_path=str(log), format="csv", negatives=[5, 10], num_blocks=2)
    data_dir = tmp_path / "run" / "data" / "synthetic"
    shutil.copytree(prepared_dir, data_dir)  # as if prepared from this file (its report rewritten to say so)
    report = json.loads((data_dir / "data_report.json").read_text())
    report.update(config=config.model_dump(mode="json"), fingerprint=data_fingerprint(config, [log]))
    (data_dir / "data_report.json").write_text(json.dumps(report))
    assert ensure_prepared(config, str(tmp_path / "run")) == data_dir  # same settings, same file: reused
    with log.open("a") as handle:
        handle.write("u0,i100,5,99999\n")
    with pytest.raises(ArtifactError, match="prepared from other contents of .*log.csv"):
        ensure_prepared(config, str(tmp_path / "run"))
    with pytest.raises(ArtifactError, match="other data settings \\(min_rating: None there, 3.0 here\\)"):
        ensure_prepared(config.model_copy(update={"min_rating": 3.0}), str(tmp_path / "run"))


def test_methods_share_the_pipelines_backbone_stage_key(prepared_dir, tmp_path):
    """The main job trains the ID backbones up front; PAD (phase 1), A-LLMRec (its CF backbone) and IDLE (its ID model)
    resolve their backbone stage from their own presets: each must key the same as the pipeline's stage of that name,
    so `raylrec run` reuses it instead of refusing it."""
    from raylrec.methods.allmrec.pipeline import backbone_stage
    from raylrec.methods.pad.pipeline import pretrain_stage
    from raylrec.pipeline import method_configs
    from raylrec.train.id_model import IDModelRecipe
    from raylrec.train.spec import resolve_stage
    from raylrec.train.stage import StageJob, stage_key

    def key(stage) -> str:
        return stage_key(
            StageJob(IDModelRecipe(stage), stage.train, stage.eval, prepared_dir, stage.run_dir, stage.to_yaml())
        ).digest()

    config = load_config(PipelineConfig, "default", {"run_dir": str(tmp_path / "run")})
    methods = {spec.name: method for spec, method in zip(config.methods, method_configs(config))}
    pipeline_stages = {spec.name: config.stage_config(spec) for spec in config.stages}
    idle = methods["idle"]
    used = [
        pretrain_stage(methods["pad"]),
        backbone_stage(methods["allmrec"]),
        resolve_stage(idle.id_model, idle.run_dir, idle.data, idle.eval),
    ]
    for stage in used:
        assert stage.stage_name in pipeline_stages, stage.stage_name
        assert key(stage) == key(pipeline_stages[stage.stage_name]), stage.stage_name


# ---------- a killed driver of `raylrec run`, rerun ----------


def tiny_pipeline_file(root: Path, synthetic_log: Path, leaderboard: bool = True) -> Path:
    config = {
        "run_dir": str(root / "run"),
        "data": {
            "dataset": "synthetic",
            "interactions_path": str(synthetic_log),
            "format": "csv",
            "negatives": [5, 10],
            "num_blocks": 2,
        },
        "eval": {"num_negatives": [5], "length_edges": [5, 10]},
        "stages": [
            {
                "name": "tiny-sas",
                "model": {
                    "name": "sasrec",
                    "hidden_size": 8,
                    "max_len": 6,
                    "num_layers": 1,
                    "num_heads": 1,
                    "inner_size": 8,
                },
                "train": {"max_epochs": 6, "patience": 50, "batch_size": 16},
            }
        ],
        "side_by_side": False,
        "leaderboard": leaderboard,
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def board_numbers(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / "leaderboard" / "leaderboard.csv")
    return frame[["method", "n", "hr@10", "ndcg@10", "cand_hit@1"]].reset_index(drop=True)


def kill_tree(driver: subprocess.Popen) -> int:
    """SIGKILL a process we started and every process under it (its local Ray instance), by PID; its exit status."""
    try:
        children = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    for proc in [psutil.Process(driver.pid), *children] if driver.poll() is None else children:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=30)  # not the driver itself: Popen reaps it and keeps its status
    return driver.wait(timeout=30)


@pytest.mark.timeout(900)
def test_killed_run_driver_then_rerun_gives_the_same_leaderboard(ray_session, prepared_dir, synthetic_log, tmp_path):
    """`raylrec run` in a subprocess, SIGKILLed by PID once its stage has checkpointed two epochs; its processes
    (its own local Ray instance) are killed with it. The same command again resumes the stage from that checkpoint
    and ends with the leaderboard of an undisturbed run of the same config (run here in-process)."""
    from raylrec.pipeline import run_pipeline

    undisturbed, killed = tmp_path / "undisturbed", tmp_path / "killed"
    for root in (undisturbed, killed):
        shutil.copytree(prepared_dir, root / "run" / "data" / "synthetic")  # same settings: accepted as prepared
    run_pipeline(load_config(PipelineConfig, str(tiny_pipeline_file(undisturbed, synthetic_log))))

    command = [sys.executable, "-m", "raylrec.cli", "run", "--config", str(tiny_pipeline_file(killed, synthetic_log))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ADDRESS", None)
    stage = killed / "run" / "models" / "tiny-sas"
    with open(tmp_path / "driver.log", "w") as output:
        driver = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            started = time.monotonic()
            while len(list((stage / "train").glob("checkpoint_2*/stage_key.json"))) < 2:
                assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
                assert time.monotonic() - started < 600, "the driver never checkpointed two epochs"
                time.sleep(0.2)
        finally:
            status = kill_tree(driver)
    assert status == -signal.SIGKILL
    assert not (stage / "DONE.json").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming tiny-sas from" in rerun.stderr + rerun.stdout
    pd.testing.assert_frame_equal(
        board_numbers(killed / "run"), board_numbers(undisturbed / "run"), check_exact=False, atol=1e-6
    )


# ---------- a killed Ray Tune trial ----------


@pytest.mark.slow  # ≈ 35 s
@pytest.mark.timeout(900)
def test_sweep_completes_after_a_trial_process_is_killed(ray_session, prepared_dir, synthetic_log, tmp_path):
    """A one-trial sweep; once the trial's stage has checkpointed two epochs, the trial's own process (Tune's
    function actor, found under this test's Ray instance) is SIGKILLed by PID. Tune restarts the trial, its stage
    resumes from that checkpoint (not from scratch), and the sweep completes."""
    import threading

    from raylrec.tune.space import SweepSpec
    from raylrec.tune.sweep import run_sweep

    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir / "data" / "synthetic")
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "dataset": "synthetic",
                    "interactions_path": str(synthetic_log),
                    "format": "csv",
                    "negatives": [5, 10],
                    "num_blocks": 2,
                },
                "eval": {"num_negatives": [5], "length_edges": [5, 10]},
                "model": {
                    "name": "sasrec",
                    "hidden_size": 8,
                    "max_len": 6,
                    "num_layers": 1,
                    "num_heads": 1,
                    "inner_size": 8,
                },
                "train": {"max_epochs": 6, "patience": 50, "batch_size": 16},
            }
        )
    )
    spec = SweepSpec(
        method="sasrec",
        preset=str(base),
        seeds=0,
        max_concurrent_trials=1,
        scheduler={"type": "none"},
        space={"train.lr": {"grid": [0.01]}},
    )
    killed: dict = {}

    def kill_first_trial() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "pid" not in killed:
            if len(list(run_dir.glob("sweeps/kill/trials/*/models/sasrec/train/checkpoint_2*/stage_key.json"))) >= 2:
                trials = [
                    p
                    for p in psutil.Process().children(recursive=True)
                    if "ImplicitFunc" in " ".join(p.cmdline() or [p.name()])
                ]
                if trials:
                    killed["pid"] = trials[0].pid
                    trials[0].kill()
                    return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_first_trial, daemon=True)
    watcher.start()
    summary = run_sweep(spec, str(run_dir), name="kill", trial_failures=1)
    watcher.join(timeout=5)
    assert "pid" in killed, "no trial process was found to kill"
    rows = pd.read_csv(run_dir / "sweeps" / "kill" / "sweep_results.csv")
    assert len(rows) == 1 and set(rows["status"]) == {"COMPLETED"} and summary["failed"] == 0
    history = pd.read_csv(next(run_dir.glob("sweeps/kill/trials/*/models/sasrec/history.csv")))
    assert history["epoch"].tolist() == list(range(6))
    # The restarted trial continued from the checkpoint: its loop's clock starts again at the resumed epoch.
    assert (history["elapsed_s"].diff() < 0).sum() == 1


# ---------- Hugging Face downloads are pinned ----------


def test_hub_models_download_the_pinned_revision_and_record_the_commit(tmp_path, monkeypatch, caplog):
    import huggingface_hub

    from raylrec.text.registry import hub_model_dir

    calls = []

    def fake_download(repo_id, revision=None):  # no network in tests: a snapshot folder as the hub cache lays out
        calls.append((repo_id, revision))
        folder = tmp_path / "snapshots" / (revision or "0123abcd")
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    folder, source = hub_model_dir("org/model@9f8e7d6c")
    assert calls[-1] == ("org/model", "9f8e7d6c") and source == "hub org/model@9f8e7d6c"
    with caplog.at_level("WARNING", logger="raylrec.text.registry"):
        folder, source = hub_model_dir("org/model")
    assert calls[-1] == ("org/model", None) and source == "hub org/model@0123abcd"
    assert "no revision pinned" in caplog.text and "org/model@0123abcd" in caplog.text
