"""The command line at parse and dry-run level (no Ray, no training): options, defaults, presets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raylrec.cli import build_parser, main
from raylrec.methods.registry import registered
from raylrec.storage import DEFAULT_RUN_DIR


def resolved(capsys, argv: list[str]) -> dict:
    """The config a --dry-run prints first (the YAML under its `# title` line)."""
    assert main(argv) == 0
    out = capsys.readouterr().out
    first = out.split("\n# ", 1)[0]
    return yaml.safe_load(first.split("\n", 1)[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model", "sasrec"],
        ["train", "--model", "gru4rec"],
        ["train", "--method", "pad"],
        ["train", "--method", "idle"],
        ["train", "--method", "allmrec"],
        ["run"],
    ],
)
def test_every_command_defaults_to_one_run_dir(capsys, argv):
    """`train --method pad` writes where `run` does, so the main job's leaderboard sees it."""
    assert resolved(capsys, [*argv, "--dry-run"])["run_dir"] == DEFAULT_RUN_DIR


def test_run_dir_option_wins_over_the_preset(capsys):
    config = resolved(capsys, ["train", "--method", "pad", "--run-dir", "elsewhere", "--dry-run"])
    assert config["run_dir"] == "elsewhere"


def test_model_and_method_are_mutually_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["train", "--model", "sasrec", "--method", "pad"])
    assert exit_.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_preset_and_config_file_are_separate(capsys, tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--preset", "default", "--config", "x.yaml"])
    capsys.readouterr()
    config_file = tmp_path / "pad.yaml"
    config_file.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "name": "pad-mine"}))
    from_file = resolved(capsys, ["train", "--method", "pad", "--config", str(config_file), "--dry-run"])
    assert (from_file["name"], from_file["run_dir"]) == ("pad-mine", str(tmp_path / "run"))
    paper = resolved(capsys, ["train", "--method", "pad", "--preset", "pad-paper", "--dry-run"])
    assert paper["pretrain"]["name"] == "sasrec-bce-paper"
    assert main(["train", "--method", "pad", "--config", str(tmp_path / "missing.yaml"), "--dry-run"]) == 1
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_the_old_config_preset_form_still_works_with_a_note(capsys):
    assert main(["train", "--method", "pad", "--config", "pad-paper", "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "--preset pad-paper" in captured.err and "sasrec-bce-paper" in captured.out


def test_dry_run_of_the_main_job_prints_every_method_config(capsys):
    assert main(["run", "--dry-run", "--set", "leaderboard=false"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# pipeline\n") and "leaderboard: false" in out
    for name in ("idle", "pad", "allmrec (stage1)", "allmrec (stage2, inference)"):
        assert f"\n# method {name}\n" in out


def test_choices_and_help_come_from_the_registry():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {action.dest: action for action in train._actions}
    assert list(options["method"].choices) == list(registered("method"))
    assert list(options["model"].choices) == list(registered("id_model"))
    assert "stage1, stage2, inference" in options["stage"].help
    assert "pad-paper" in options["preset"].help


def test_presets_lists_every_shipped_preset_with_a_description(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shipped = sorted(
        p.stem
        for p in (Path(__file__).resolve().parents[1] / "raylrec" / "presets").glob("*.yaml")
        if not p.name.startswith("_")
    )
    assert sorted(line.split()[0] for line in lines) == shipped
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # a description on every line


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("raylrec ")


def test_address_is_passed_to_ray_through_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("RAY_ADDRESS", "")  # so the test's end restores the variable as it was
    monkeypatch.delenv("RAY_ADDRESS")
    assert main(["train", "--model", "sasrec", "--dry-run"]) == 0
    assert "RAY_ADDRESS" not in os.environ  # the default `local`: a new local instance
    assert main(["--address", "ray://head:10001", "train", "--model", "sasrec", "--dry-run"]) == 0
    assert os.environ["RAY_ADDRESS"] == "ray://head:10001"


def test_python_dash_m_raylrec_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "raylrec", "train", "--method", "idle", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("# method idle\n")
