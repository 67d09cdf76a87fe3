"""Dataset presets of the main job: `raylrec run --dataset NAME` picks the dataset's preset, or sets data.dataset."""

from __future__ import annotations

import pytest

from raylrec import pipeline
from raylrec.cli import main
from raylrec.config import load_config
from raylrec.errors import RaylrecError
from raylrec.pipeline import PipelineConfig, check_shared_stages, method_configs


@pytest.fixture
def captured(monkeypatch):
    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda config, cache_root: seen.append(config) or [])
    return seen


@pytest.mark.parametrize("dataset", ["amazon14-beauty", "amazon18-scientific"])
def test_run_with_a_named_dataset_uses_its_preset(dataset, captured, tmp_path):
    assert main(["run", "--dataset", dataset, "--run-dir", str(tmp_path / "run")]) == 0
    (config,) = captured
    assert config.data.dataset == dataset and config.run_dir == str(tmp_path / "run")
    assert config.data.deduplicate == (dataset != "amazon18-scientific")  # UniSRec's split keeps repeated items
    assert {s.name for s in config.stages} == {"sasrec", "gru4rec", "sasrec-bce"}
    assert {m.name for m in config.methods} == {"idle", "pad", "allmrec"}
    idle, pad, allmrec_stage1, allmrec_rest = method_configs(config)
    assert idle.prompt.item_template == "{title}" and allmrec_rest.stage2.prompt.noun == "product"
    assert allmrec_stage1.stage1 == allmrec_rest.stage1  # both entries describe the same stage-1 model
    assert idle.id_model.train == config.stages[0].train  # IDLE's ID model is the pipeline's sasrec stage


def test_run_with_another_dataset_name_sets_it_on_the_chosen_preset(captured):
    assert main(["run", "--dataset", "ml-1m", "--set", "data.negatives=[19]"]) == 0
    (config,) = captured
    assert config.data.dataset == "ml-1m" and config.data.negatives == [19]
    assert config.stages == load_config(PipelineConfig, "default").stages


@pytest.mark.parametrize("preset", ["default", "amazon14-beauty", "amazon18-scientific"])
def test_every_methods_upstream_stage_is_the_pipeline_stage_of_that_name(preset):
    """PAD on Beauty once asked for a `sasrec` with the ML-100k epochs and failed after the backbones ran."""
    config = load_config(PipelineConfig, preset)
    stages = [config.stage_config(spec) for spec in config.stages]
    check_shared_stages(stages, config.methods, method_configs(config))


def test_a_differing_upstream_stage_is_refused_before_anything_runs():
    config = load_config(PipelineConfig, "amazon14-beauty")
    pad = next(m for m in config.methods if m.name == "pad")
    pad.set = {**pad.set, "pretrain": {"train": {"max_epochs": 7}}}
    expected = r"method pad pretrain = stage 'sasrec': train.max_epochs: 100 \(stages\) vs 7"
    stages = [config.stage_config(spec) for spec in config.stages]
    with pytest.raises(RaylrecError, match=expected):
        check_shared_stages(stages, config.methods, method_configs(config))
