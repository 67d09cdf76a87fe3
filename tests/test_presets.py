"""Preset inheritance (`defaults:`, stage-spec presets): every shipped preset resolves to the settings recorded in
tests/data/resolved_presets.json, so moving shared blocks into inherited presets changes no run.

The record was written from main before the presets inherited (2026-12-04), with one deliberate change: the CPU
method presets' run_dir is runs/default (was runs/pad, runs/idle, runs/allmrec); then updated for main's pinned BGE
revision in idle-paper. After a deliberate preset change, rewrite it:
RAYLREC_UPDATE_PRESET_RECORD=1 pytest tests/test_presets.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raylrec.config import flatten, load_config, read_preset
from raylrec.errors import RaylrecError
from raylrec.pipeline import PipelineConfig, method_configs
from raylrec.train.config import StageConfig

RECORD = Path(__file__).parent / "data" / "resolved_presets.json"
CONFIGS = {
    "sasrec": "raylrec.train.config:StageConfig",
    "sasrec-bce": "raylrec.train.config:StageConfig",
    "gru4rec": "raylrec.train.config:StageConfig",
    "pad": "pad",
    "pad-paper": "pad",
    "idle": "idle",
    "idle-paper": "idle",
    "allmrec": "allmrec",
    "allmrec-long": "allmrec",
    "allmrec-paper": "allmrec",
}
PIPELINES = ("default", "paper", "amazon14-beauty", "amazon18-scientific")


def resolved(name: str) -> dict:
    """A preset's full settings (a pipeline preset: with its stages and methods resolved)."""
    if name in PIPELINES:
        config = load_config(PipelineConfig, name)
        return {
            "pipeline": config.model_dump(mode="json"),
            "stages": [config.stage_config(s).model_dump(mode="json") for s in config.stages],
            "methods": [m.model_dump(mode="json") for m in method_configs(config)],
        }
    if CONFIGS[name].startswith("raylrec."):
        return load_config(StageConfig, name).model_dump(mode="json")
    from raylrec.methods.registry import get_method

    return get_method(CONFIGS[name]).load(name, {}).model_dump(mode="json")


@pytest.mark.parametrize("name", [*CONFIGS, *PIPELINES])
def test_presets_resolve_as_recorded(name):
    if os.environ.get("RAYLREC_UPDATE_PRESET_RECORD"):
        record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        RECORD.write_text(json.dumps({**record, name: resolved(name)}, indent=1, sort_keys=True) + "\n")
    expected, got = flatten(json.loads(RECORD.read_text())[name]), flatten(resolved(name))
    assert {
        k: (expected.get(k), got.get(k)) for k in expected.keys() | got.keys() if expected.get(k) != got.get(k)
    } == {}


def test_defaults_merge_in_order_under_keys_and_refuse_circles(tmp_path):
    (tmp_path / "a.yaml").write_text("data: {dataset: a, seed: 1}\nname: a\n")
    (tmp_path / "b.yaml").write_text(f"defaults: [{tmp_path / 'a.yaml'}]\ndata: {{seed: 2}}\n")
    (tmp_path / "c.yaml").write_text(f"defaults: [{tmp_path / 'b.yaml'}, {tmp_path / 'a.yaml'}@spec.inner]\nname: c\n")
    assert read_preset(str(tmp_path / "c.yaml")) == {
        "data": {"dataset": "a", "seed": 2},
        "name": "c",
        "spec": {"inner": {"data": {"dataset": "a", "seed": 1}, "name": "a"}},
    }
    (tmp_path / "d.yaml").write_text(f"defaults: {tmp_path / 'e.yaml'}\n")
    (tmp_path / "e.yaml").write_text(f"defaults: [{tmp_path / 'd.yaml'}]\n")
    with pytest.raises(RaylrecError, match="inherit in a circle"):
        read_preset(str(tmp_path / "d.yaml"))


def test_shared_parts_exist_once():
    """The main job's data/eval block and its SASRec stages are written in one preset each and inherited."""
    presets = Path(__file__).resolve().parents[1] / "raylrec" / "presets"
    for name in ("default", "pad", "idle", "allmrec", "allmrec-long"):
        text = (presets / f"{name}.yaml").read_text()
        assert "dataset: ml-100k" not in text and "ema_decay: null" not in text and "max_epochs: 15" not in text
