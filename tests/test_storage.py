"""Run directories given as URIs: an object-store one is mirrored on each node and synced at stage boundaries.
Object stores are stood in for by a `file://` folder treated the same way (RAYLREC_MIRROR_FILE_URIS=1)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from raylrec.errors import ArtifactError
from raylrec.pipeline import PipelineConfig, run_pipeline
from raylrec.storage import MIRROR_FILE_URIS_ENV, RunLayout, RunStore
from tests.test_fault_tolerance import GRU, pipeline


@pytest.fixture
def bucket(monkeypatch, tmp_path) -> Path:
    """The 'object store' folder of a run directory; this node's cache (and so its mirror) is tmp/node-a."""
    monkeypatch.setenv(MIRROR_FILE_URIS_ENV, "1")
    monkeypatch.setenv("RAYLREC_CACHE_DIR", str(tmp_path / "node-a"))
    return tmp_path / "bucket" / "run"


def test_local_path_and_file_uri_are_used_in_place(tmp_path):
    for location in (tmp_path / "r", (tmp_path / "r").as_uri()):
        store = RunStore(location)
        assert not store.mirrored and store.root == (tmp_path / "r").resolve()
        assert store.pull() == 0 and store.push(tmp_path) == 0
    assert RunLayout((tmp_path / "r").as_uri()).root == (tmp_path / "r").resolve()


def test_unopenable_uri_is_a_clear_error():
    with pytest.raises(ArtifactError, match=r"run directory nosuchfs://bucket/x: pyarrow cannot open it"):
        RunStore("nosuchfs://bucket/x")


def test_push_uploads_artifacts_but_not_ray_storage_and_pull_brings_them_to_another_node(bucket, tmp_path, monkeypatch):
    store = RunStore(bucket.as_uri())
    assert store.mirrored and store.root == tmp_path / "node-a" / "run-mirrors" / "file" / str(bucket).lstrip("/")
    stage = store.root / "models" / "sasrec"
    (stage / "train" / "checkpoint_1").mkdir(parents=True)
    (stage / "train" / "checkpoint_1" / "model.pt").write_bytes(b"ray's own")
    (stage / "DONE.json").write_text('{"v": 1}')
    (stage / "metrics_test.json").write_text("{}")

    assert store.push(stage) == 2
    assert (bucket / "models" / "sasrec" / "DONE.json").read_text() == '{"v": 1}'
    assert not (bucket / "models" / "sasrec" / "train").exists()
    assert store.locate(stage) == (bucket / "models" / "sasrec").as_uri()
    assert store.pull() == 0  # the mirror already matches what it uploaded

    # Ray Train writes checkpoints straight to the URI; another node pulls artifacts only.
    (bucket / "models" / "sasrec" / "train" / "checkpoint_2").mkdir(parents=True)
    (bucket / "models" / "sasrec" / "train" / "checkpoint_2" / "model.pt").write_bytes(b"x")
    monkeypatch.setenv("RAYLREC_CACHE_DIR", str(tmp_path / "node-b"))
    other = RunStore(bucket.as_uri())
    assert other.root != store.root
    assert other.pull() == 2
    assert (other.root / "models" / "sasrec" / "DONE.json").read_text() == '{"v": 1}'
    assert not (other.root / "models" / "sasrec" / "train").exists()
    assert other.pull() == 0

    # A newer copy at the URI (a stage re-run elsewhere) replaces the mirror's.
    done = bucket / "models" / "sasrec" / "DONE.json"
    done.write_text('{"v": 22}')
    later = done.stat().st_mtime_ns + 10**9
    os.utime(done, ns=(later, later))
    assert other.pull(other.root / "models") == 1
    assert (other.root / "models" / "sasrec" / "DONE.json").read_text() == '{"v": 22}'
    assert not list((other.root / "models" / "sasrec").glob(".DONE.json.*"))  # no temporary left behind


def test_path_outside_the_run_directory_is_refused(bucket, tmp_path):
    with pytest.raises(ArtifactError, match="is not inside the run directory"):
        RunStore(bucket.as_uri()).push(tmp_path)


def test_pipeline_on_a_mirrored_run_dir_writes_to_the_uri_and_resumes_on_another_node(
    ray_session, prepared_dir, synthetic_log, bucket, tmp_path, monkeypatch, caplog
):
    shutil.copytree(prepared_dir, bucket / "data" / "synthetic")  # already prepared at the URI
    config = PipelineConfig.model_validate(pipeline(bucket, synthetic_log, [GRU]))
    first = run_pipeline(config)

    remote_stage = bucket / "models" / "tiny-gru"
    for artifact in ("DONE.json", "metrics_test.json", "model.safetensors", "item_embeddings.safetensors"):
        assert (remote_stage / artifact).is_file(), artifact
    assert list((remote_stage / "train").glob("checkpoint_*/best_model.pt"))  # Ray Train wrote them to the URI
    assert (bucket / "results.md").is_file() and (bucket / "leaderboard" / "leaderboard.md").is_file()
    mirror = RunStore(bucket.as_uri()).root
    assert (mirror / "models" / "tiny-gru" / "DONE.json").is_file()
    assert not (mirror / "models" / "tiny-gru" / "train").exists()

    # Another node (an empty mirror): the finished stage is found at the URI and skipped.
    monkeypatch.setenv("RAYLREC_CACHE_DIR", str(tmp_path / "node-b"))
    checkpoints = sorted(p.name for p in (remote_stage / "train").glob("checkpoint_*"))
    again = run_pipeline(config)
    assert again[0]["test"] == first[0]["test"]
    assert sorted(p.name for p in (remote_stage / "train").glob("checkpoint_*")) == checkpoints

    # An unfinished stage resumes from the checkpoint Ray Train left at the URI.
    (remote_stage / "DONE.json").unlink()
    monkeypatch.setenv("RAYLREC_CACHE_DIR", str(tmp_path / "node-c"))
    with caplog.at_level(logging.INFO, logger="raylrec"):
        resumed = run_pipeline(config)
    assert "resuming tiny-gru from" in caplog.text and str(remote_stage / "train") in caplog.text
    assert resumed[0]["test"] == first[0]["test"]
    assert (remote_stage / "DONE.json").is_file()


@pytest.mark.slow  # ≈ 35 s; the mirrored pipeline test covers the mirror in the default run
def test_sweep_on_a_mirrored_run_dir_keeps_its_results_at_the_uri(ray_session, prepared_dir, synthetic_log, bucket):
    from raylrec.tune.space import SweepSpec
    from raylrec.tune.sweep import run_sweep
    from tests.test_tune import tiny_base

    shutil.copytree(prepared_dir, bucket / "data" / "synthetic")
    spec = SweepSpec(
        method="sasrec",
        preset=str(tiny_base(bucket.parent, synthetic_log)),
        seeds=2,
        max_concurrent_trials=1,
        scheduler={"type": "none"},
        space={"train.lr": {"grid": [0.01]}},
    )
    summary = run_sweep(spec, bucket.as_uri(), name="tiny")

    sweep = bucket / "sweeps" / "tiny"
    for artifact in ("sweep.yaml", "sweep_results.csv", "best.json"):
        assert (sweep / artifact).is_file(), artifact
    assert (sweep / "tune").is_dir() and (sweep / "seeds-tune").is_dir()  # Ray Tune's state, written at the URI
    # Seed 2020 is the trial itself (copied in the mirror, pushed to the URI); seed 2021 was trained.
    assert [s.get("reused_trial") for s in summary["seeds"]] == [summary["best_trial"], None]
    for seed in summary["seeds"]:
        assert (sweep / "seeds" / f"seed-{seed['seed']}" / "models" / "sasrec" / "metrics_test.json").is_file()
    mean = (summary["seeds"][0]["test"]["ndcg@10"] + summary["seeds"][1]["test"]["ndcg@10"]) / 2
    assert summary["test_mean"]["ndcg@10"] == pytest.approx(mean)
    assert not (RunStore(bucket.as_uri()).root / "sweeps" / "tiny" / "tune").exists()
