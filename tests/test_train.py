import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from raylrec.data.prepared import PreparedData
from raylrec.eval.metrics import mean_metrics
from raylrec.eval.ranks import read_ranks
from raylrec.models.base import ModelConfig
from raylrec.train.config import StageConfig, TrainConfig
from raylrec.train.id_model import load_stage_model
from raylrec.train.loop import STATE_FILE
from raylrec.train.stage import TRAIN_RUN_NAME, latest_checkpoint, run_training_stage

TINY_MODEL = dict(hidden_size=16, max_len=8, num_layers=1, num_heads=2, inner_size=16, dropout=0.1, attn_dropout=0.1)


def stage(tmp_path, name="sasrec", **train) -> StageConfig:
    return StageConfig(run_dir=str(tmp_path), model=ModelConfig(name=name, **TINY_MODEL),
                       train=TrainConfig(**{"max_epochs": 2, "batch_size": 16, "lr": 0.01, **train}),
                       eval={"num_negatives": [5, 10], "length_edges": [5, 10]})


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_training_stage_writes_every_artifact(ray_session, prepared_dir, tmp_path, name):
    config = stage(tmp_path, name)
    summary = run_training_stage(config, prepared_dir)
    out = tmp_path / "models" / name
    data = PreparedData(prepared_dir)
    for artifact in ("model.safetensors", "model_config.json", "item_embeddings.safetensors",
                     "user_representations.safetensors", "metrics_valid.json", "metrics_test.json",
                     "history.csv", "DONE.json", "stage_config.yaml"):
        assert (out / artifact).exists(), artifact
    assert load_file(out / "item_embeddings.safetensors")["item_embeddings"].shape == (data.num_items + 1, 16)
    users = load_file(out / "user_representations.safetensors")
    assert users["valid"].shape == users["test"].shape == (data.num_users, 16)
    assert users["train_hidden"].shape == (data.num_users, 8, 16)
    # The exported user vectors are the ones the saved model computes.
    model = load_stage_model(out)
    window = torch.from_numpy(data.input_windows("test", np.arange(3), 8))
    assert torch.allclose(model.user_vector(window), users["test"][:3], atol=1e-5)
    metrics = json.loads((out / "metrics_test.json").read_text())
    assert metrics["data_fingerprint"] == data.fingerprint
    assert set(metrics["metrics"]) >= {"full", "sampled_5", "sampled_10", "buckets"}
    assert 0 <= metrics["metrics"]["full"]["ndcg@10"] <= 1
    assert summary["test"]["hr@10"] == metrics["metrics"]["full"]["hr@10"]
    assert metrics["role"] == "id_model" and metrics["backbone"] is None
    # The stored per-user ranks reproduce the metrics (the leaderboard's paired intervals read them).
    ranks = read_ranks(out / "ranks_test.parquet")
    assert len(ranks) == data.num_users and (ranks["target"].to_numpy() == data.targets("test")).all()
    assert mean_metrics(ranks["full"].to_numpy(), [10])["ndcg@10"] == pytest.approx(metrics["metrics"]["full"]["ndcg@10"])
    assert len(pd.read_csv(out / "history.csv")) == 2


def test_rerun_skips_and_longer_run_resumes_from_checkpoint(ray_session, prepared_dir, tmp_path, caplog):
    first = run_training_stage(stage(tmp_path, max_epochs=2, patience=50), prepared_dir)
    assert run_training_stage(stage(tmp_path, max_epochs=2, patience=50), prepared_dir) == first
    with caplog.at_level(logging.WARNING, logger="raylrec.train.stage"):
        as_uri = stage(tmp_path, max_epochs=2, patience=50).model_copy(update={"run_dir": tmp_path.as_uri()})
        assert run_training_stage(as_uri, prepared_dir) == first
    assert "other settings" not in caplog.text  # the same folder spelt another way is the same stage
    with caplog.at_level(logging.WARNING, logger="raylrec.train.stage"):
        assert run_training_stage(stage(tmp_path, max_epochs=3, patience=50), prepared_dir) == first
    assert "train.max_epochs: 2 there, 3 here" in caplog.text  # reused, but never silently
    history_file = tmp_path / "models" / "sasrec" / "history.csv"
    before = pd.read_csv(history_file)
    resumed = run_training_stage(stage(tmp_path, max_epochs=4, patience=50), prepared_dir, force=True)
    history = pd.read_csv(history_file)
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    # Rows 0–1 are the first run's (kept by save_history), 2–3 the new run's: it continued from the epoch-2
    # checkpoint (a run from scratch would have rewritten rows 0–1 with its own timings).
    pd.testing.assert_frame_equal(history.iloc[:2].reset_index(drop=True), before, check_dtype=False)
    assert resumed["final_metrics"]["epoch"] == 3


def test_two_ddp_workers_train_and_agree_on_validation(ray_session, prepared_dir, tmp_path):
    config = stage(tmp_path, num_workers=2, cpus_per_worker=0.5)
    summary = run_training_stage(config, prepared_dir)
    history = pd.read_csv(tmp_path / "models" / "sasrec" / "history.csv")
    assert len(history) == 2
    # Validation covers every user once, gathered over both workers.
    best = history["valid_ndcg@10"].max()
    assert summary["final_metrics"]["best_valid_ndcg@10"] == pytest.approx(best)


def latest_training_state(stage_dir: Path) -> dict:
    with latest_checkpoint(str(stage_dir / TRAIN_RUN_NAME)).as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, weights_only=False)


def test_weight_average_is_validated_exported_and_resumed(ray_session, prepared_dir, tmp_path):
    run_training_stage(stage(tmp_path / "resumed", max_epochs=1, ema_decay=0.5), prepared_dir)
    out = tmp_path / "resumed" / "models" / "sasrec"
    saved = latest_training_state(out)
    inputs, _ = PreparedData(prepared_dir).train_windows(TINY_MODEL["max_len"], None)
    assert saved["averaged_model"]["n_averaged"].item() == -(-len(inputs) // 16)  # one update per batch
    averaged, raw, exported = saved["averaged_model"]["model"], saved["model"], load_file(out / "model.safetensors")
    assert not torch.equal(averaged["item_embedding.weight"], raw["item_embedding.weight"])
    # The only epoch is the best one: its exported weights are the average, not the raw weights.
    assert all(torch.equal(exported[name], averaged[name]) for name in exported)

    # Resumed for a second epoch, the average continues where it stopped: the same as two epochs in one go.
    run_training_stage(stage(tmp_path / "resumed", max_epochs=2, ema_decay=0.5), prepared_dir, force=True)
    run_training_stage(stage(tmp_path / "straight", max_epochs=2, ema_decay=0.5), prepared_dir)
    resumed = latest_training_state(out)["averaged_model"]
    straight = latest_training_state(tmp_path / "straight" / "models" / "sasrec")["averaged_model"]
    assert resumed["n_averaged"] == straight["n_averaged"] == 2 * saved["averaged_model"]["n_averaged"]
    assert all(torch.equal(resumed["model"][name], straight["model"][name]) for name in straight["model"])


@pytest.mark.parametrize("train, error", [
    (dict(ema_decay=1.0), "less than 1"),
    (dict(ema_decay=0.99, deepspeed="zero2"), "only one of ema_decay and deepspeed"),
    (dict(loss="bce", label_smoothing=0.1), "needs train.loss: ce"),
    (dict(label_smoothing=1.0), "less than 1"),
])
def test_training_settings_are_checked(train, error):
    with pytest.raises(ValueError, match=error):
        TrainConfig(**train)


def test_worker_progress_lines_bypass_ray_trains_print_patch(capsys, caplog, monkeypatch):
    """Ray Train replaces `print` in workers with one that logs the line and also echoes it (so the driver showed
    it twice): progress lines go to stdout only, and Train's per-report INFO line is held back."""
    from ray.train.v2._internal.logging.patch_print import redirected_print

    from raylrec.train.loop import progress, quiet_report_logs

    caplog.set_level(logging.INFO)
    monkeypatch.setattr("builtins.print", redirected_print)
    print("patched")  # the patch logs what print gets
    assert [r.getMessage() for r in caplog.records] == ["patched"]
    progress("[sasrec] epoch 3: loss 1.0")
    assert capsys.readouterr().out.endswith("[sasrec] epoch 3: loss 1.0\n")
    assert [r.getMessage() for r in caplog.records] == ["patched"]

    import ray.train.v2._internal.execution.context as report_module
    report_logger = logging.getLogger(report_module.__file__)
    monkeypatch.setattr(report_logger, "level", logging.NOTSET)
    quiet_report_logs()
    assert not report_logger.isEnabledFor(logging.INFO) and report_logger.isEnabledFor(logging.WARNING)
