"""Adding a method is its own module(s) plus one registry entry (docs/extending.md): a toy method, registered here,
is offered by the CLI, the pipeline and Tune, runs through `raylrec train --method`, and lands on the leaderboard."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from toy_method import TOY

from raylrec.cli import build_parser, main
from raylrec.methods.registry import get_method, register_method, unregister_method


@pytest.fixture
def toy_registered():
    register_method(TOY)
    yield TOY
    unregister_method(TOY.name)


@pytest.fixture
def toy_run(prepared_dir, synthetic_log, tmp_path):
    """A run directory holding the session's prepared synthetic data, and a toy config file on it."""
    run_dir = tmp_path / "run"
    shutil.copytree(prepared_dir, run_dir / "data" / "synthetic")
    config = tmp_path / "toy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(run_dir),
                "power": 0.5,
                "data": {
                    "dataset": "synthetic",
                    "interactions_path": str(synthetic_log),
                    "format": "csv",
                    "negatives": [5, 10],
                    "num_blocks": 2,
                },
                "eval": {"ks": [1, 5, 10], "num_negatives": [5, 10]},
            }
        )
    )
    return run_dir, config


def test_a_registered_method_is_offered_everywhere(toy_registered):
    from raylrec.leaderboard.core import display_name
    from raylrec.tune.targets import get_target

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method_option = next(a for a in train._actions if a.dest == "method")
    assert "toy-popularity" in method_option.choices and "item popularity" in method_option.help
    assert get_target("toy-popularity") is toy_registered
    assert display_name("toy-popularity") == "Toy popularity"
    assert get_method("toy-popularity").load(None, {"power": 2.0}).power == 2.0


def test_the_toy_method_runs_through_the_cli_and_reaches_the_leaderboard(toy_registered, toy_run, capsys):
    run_dir, config = toy_run
    assert main(["train", "--method", "toy-popularity", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "# method toy-popularity\n" in out and "power: 0.5" in out
    summaries = json.loads(out[out.index("{\n") :])
    test = summaries["toy-popularity"]["test"]
    assert 0 < test["ndcg@10"] <= test["hr@10"] <= 1  # popularity finds some targets on the synthetic log
    stored = json.loads((run_dir / "models" / "toy-popularity" / "metrics_test.json").read_text())
    assert stored["metrics"]["full"]["ndcg@10"] == test["ndcg@10"]
    assert main(["leaderboard", str(run_dir), "--no-plots"]) == 0
    board = (run_dir / "leaderboard" / "leaderboard.md").read_text()
    assert "Toy popularity" in board


def test_unregistered_names_are_clear_errors():
    from raylrec.errors import RaylrecError

    with pytest.raises(RaylrecError, match="unknown method 'toy-popularity'.*docs/extending.md"):
        get_method("toy-popularity", "method")


def test_every_shipped_registration_resolves():
    """Each lazy "module:attribute" reference of every shipped method and backbone names a real object, and the
    stage a sweep selects is the one the method writes."""
    from raylrec.methods.registry import registered, resolve

    for spec in registered().values():
        for reference in (
            spec.config_class,
            spec.runner,
            spec.final_stage,
            spec.tune_prerequisites,
            spec.seed_of_trial,
        ):
            assert reference is None or callable(resolve(reference)), (spec.name, reference)
        config = spec.load(None, {})
        assert spec.stage_name(config) == {"allmrec": "allmrec-stage2"}.get(spec.name, spec.name)
        assert spec.trial_seed(config) == (2020 if spec.kind == "id_model" else None)
