import json
import subprocess
import sys
from pathlib import Path

import pytest

from raylrec.cli import main
from raylrec.config import load_config
from raylrec.data.prepare import ensure_prepared
from raylrec.errors import ArtifactError, RaylrecError
from raylrec.pipeline import PipelineConfig, run_pipeline


def tiny_pipeline(tmp_path, synthetic_log) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "run_dir": str(tmp_path / "run"),
            "data": {
                "dataset": "synthetic",
                "interactions_path": str(synthetic_log),
                "format": "csv",
                "negatives": [5],
                "num_blocks": 2,
            },
            "eval": {"num_negatives": [5], "length_edges": [5, 10]},
            "stages": [
                {
                    "name": "tiny-gru",
                    "model": {"name": "gru4rec", "hidden_size": 8, "max_len": 6, "num_layers": 1, "inner_size": 8},
                    "train": {"max_epochs": 2, "batch_size": 16},
                },
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
                    "train": {"max_epochs": 2, "batch_size": 16},
                },
            ],
        }
    )


def test_pipeline_runs_then_skips_finished_stages(ray_session, tmp_path, synthetic_log, capsys):
    config = tiny_pipeline(tmp_path, synthetic_log)
    first = run_pipeline(config)
    out = capsys.readouterr().out
    assert "# stage tiny-sas\n" in out and "  window_stride: null\n" in out  # resolved stage settings, in full
    steps = [line for line in out.splitlines() if line.startswith("[run ") and "done in" in line]
    assert [line.split("]")[0] for line in steps] == ["[run 1/3", "[run 2/3", "[run 3/3"]  # prepare, backbones, board
    assert [s["stage"] for s in first] == ["tiny-gru", "tiny-sas"]  # trained side by side, reported in order
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| tiny-gru |" in table and "| tiny-sas |" in table and "test ndcg@10" in table
    board = (tmp_path / "run" / "leaderboard" / "leaderboard.md").read_text()  # the job ends in the leaderboard
    assert "| tiny-gru | 1 |" in board and (tmp_path / "run" / "leaderboard" / "metrics.png").stat().st_size > 0
    done = tmp_path / "run" / "models" / "tiny-gru" / "DONE.json"
    stamp = done.stat().st_mtime_ns
    assert run_pipeline(config) == first
    assert done.stat().st_mtime_ns == stamp  # not retrained


def test_prepared_data_is_not_silently_replaced(ray_session, tmp_path, synthetic_log):
    config = tiny_pipeline(tmp_path, synthetic_log)
    ensure_prepared(config.data, config.run_dir)
    changed = config.data.model_copy(update={"min_rating": 3.0})
    with pytest.raises(ArtifactError, match="prepared with other data settings"):
        ensure_prepared(changed, config.run_dir)


def test_a_stage_spec_changes_only_the_settings_it_names(tmp_path):
    from raylrec.train.spec import StageSpec

    config = load_config(PipelineConfig, "default")
    preset = config.stage_config(StageSpec(name="sasrec", preset="sasrec"))
    shorter = config.stage_config(
        StageSpec(name="sasrec", preset="sasrec", train={"max_epochs": 3}, model={"ffn_dropout": 0.0})
    )
    assert shorter.train.max_epochs == 3 and shorter.model.ffn_dropout == 0.0
    assert shorter.train.model_copy(update={"max_epochs": preset.train.max_epochs}) == preset.train
    assert shorter.model.model_copy(update={"ffn_dropout": None}) == preset.model
    bad = tmp_path / "bad-stage.yaml"
    bad.write_text("stages:\n  - {name: sasrec, preset: sasrec, train: {max_epoch: 3}}\n")
    with pytest.raises(RaylrecError, match="max_epoch"):
        load_config(PipelineConfig, str(bad))
    too_long = StageSpec(name="sasrec", preset="sasrec", model={"max_len": 20})  # the preset's stride is 25
    with pytest.raises(RaylrecError, match="stage 'sasrec'.*window_stride"):
        config.stage_config(too_long)


def test_presets_load_and_unknown_keys_are_errors(tmp_path):
    config = load_config(PipelineConfig, "default")
    assert [s.name for s in config.stages] == ["sasrec", "gru4rec", "sasrec-bce"]
    assert {m.name for m in config.methods} == {"pad", "allmrec", "idle"}  # every implemented method
    # PAD builds on the main job's sasrec stage, A-LLMRec on its sasrec-bce stage: the pipeline trains each up
    # front, beside the other backbones, with the settings the method's preset asks for, so both find it done
    from raylrec.methods.allmrec.config import ALLMRecConfig
    from raylrec.methods.pad.config import PadConfig

    allmrec, pad = load_config(ALLMRecConfig, "allmrec"), load_config(PadConfig, "pad")
    stages = {spec.name: config.stage_config(spec) for spec in config.stages}
    assert stages[pad.pretrain.name] == config.stage_config(pad.pretrain)
    assert stages[allmrec.backbone.name] == config.stage_config(allmrec.backbone)
    assert config.stage_config(config.stages[0]).model.hidden_size == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_dir: x\ntrain_typo: 1\n")
    with pytest.raises(RaylrecError, match="train_typo"):
        load_config(PipelineConfig, str(bad))


def test_stride_longer_than_the_window_is_a_config_error(tmp_path, capsys):
    code = main(["train", "--model", "sasrec", "--run-dir", str(tmp_path), "--set", "model.max_len=6"])
    assert code == 1
    assert "window_stride" in capsys.readouterr().err


@pytest.mark.parametrize(
    "script, command",
    [
        ("run_pipeline", "run"),
        ("train_stage", "train"),
        ("encode", "encode"),
        ("tune", "tune"),
        ("leaderboard", "leaderboard"),
    ],
)
def test_job_entrypoints_are_the_cli_commands(script, command):
    jobs = Path(__file__).resolve().parents[1] / "jobs"
    result = subprocess.run(
        [sys.executable, str(jobs / f"{script}.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert f"raylrec {command}" in result.stdout  # argparse's usage line of that very subcommand


def test_cli_reports_bad_input_without_traceback(ray_session, tmp_path, capsys):
    log = tmp_path / "log.csv"
    log.write_text("user_id,item_id,rating,timestamp\nu1,i1,5,100\nu1,i2,five,101\n")
    code = main(
        [
            "data",
            "prepare",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            f"interactions_path={log}",
            "--set",
            "format=csv",
            "--set",
            "dataset=mine",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "log.csv" in err and "line 3" in err and "rating" in err


def test_cli_train_prints_full_config(ray_session, tmp_path, synthetic_log, capsys):
    code = main(
        [
            "train",
            "--model",
            "sasrec",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "data.dataset=synthetic",
            "--set",
            f"data.interactions_path={synthetic_log}",
            "--set",
            "data.format=csv",
            "--set",
            "data.negatives=[5]",
            "--set",
            "eval.num_negatives=[5]",
            "--set",
            "model.max_len=6",
            "--set",
            "model.hidden_size=8",
            "--set",
            "train.max_epochs=1",
            "--set",
            "train.window_stride=3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "# stage sasrec" in out and "window_stride: 3" in out and "exclude_history: true" in out
    summary = json.loads(out[out.index("{\n") :])
    assert summary["stage"] == "sasrec" and 0 <= summary["test"]["ndcg@10"] <= 1


def test_pipeline_names_unknown_methods_before_running_anything(tmp_path, synthetic_log):
    config = tiny_pipeline(tmp_path, synthetic_log).model_copy(update={"methods": [{"name": "nope"}]})
    config = PipelineConfig.model_validate(config.model_dump())
    with pytest.raises(RaylrecError, match="nope"):
        run_pipeline(config)
    assert not (tmp_path / "run").exists()


def test_paper_preset_loads_with_methods():
    config = load_config(PipelineConfig, "paper")
    assert [m.name for m in config.methods] == ["pad", "allmrec", "idle"] and config.data.user_core == 5
    assert config.stage_config(config.stages[0]).model.hidden_size == 50


def test_side_by_side_respects_cpus_and_order(ray_session):
    """On the session's 2 CPUs: two 1-CPU jobs at once; a 2-CPU job alone; a job listed after another entry of
    its kind waits for it, and a later job that fits runs meanwhile."""
    from functools import partial

    from raylrec.pipeline import Job, run_side_by_side

    def timed_job(name: str, seconds: float) -> dict:  # defined here: shipped to the Ray tasks by value
        import time

        started = time.time()
        time.sleep(seconds)
        return {"name": name, "start": started, "end": time.time()}

    jobs = [
        Job("a", 1, partial(timed_job, "a", 2.0)),
        Job("b", 1, partial(timed_job, "b", 1.0)),
        Job("c", 2, partial(timed_job, "c", 0.5), after=(0,)),
        Job("d", 1, partial(timed_job, "d", 0.5)),
    ]
    a, b, c, d = run_side_by_side(jobs)
    assert [r["name"] for r in (a, b, c, d)] == ["a", "b", "c", "d"]
    assert b["start"] < a["end"]  # side by side
    assert d["start"] >= b["end"] - 0.05 and d["start"] < a["end"]  # the third 1-CPU job passes the waiting 2-CPU one
    assert c["start"] >= max(a["end"], d["end"]) - 0.05  # after its predecessor, and alone


def test_default_preset_reservations():
    from raylrec.pipeline import method_configs, widest_reservation

    config = load_config(PipelineConfig, "default")
    reserved = {
        i: spec.cpus or widest_reservation(method)
        for i, (spec, method) in enumerate(zip(config.methods, method_configs(config)))
    }
    names = [spec.name for spec in config.methods]
    assert names == ["idle", "pad", "allmrec", "allmrec"]
    assert reserved == {0: 1, 1: 1, 2: 1, 3: 2}  # A-LLMRec's stage 2 uses 2 DeepSpeed workers, its stage 1 one
    split = [stage for spec in config.methods if spec.name == "allmrec" for stage in spec.set["stages"]]
    assert split == ["stage1", "stage2", "inference"]  # the two entries run all of A-LLMRec, in order
