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
from raylrec.train.loop import STATE_FILE, epoch_sample_indices, lr_factor
from raylrec.train.stage import TRAIN_RUN_NAME, latest_checkpoint, run_training_stage

TINY_MODEL = dict(hidden_size=16, max_len=8, num_layers=1, num_heads=2, inner_size=16, dropout=0.1, attn_dropout=0.1)


def stage(tmp_path, name="sasrec", **train) -> StageConfig:
    return StageConfig(
        run_dir=str(tmp_path),
        model=ModelConfig(name=name, **TINY_MODEL),
        train=TrainConfig(**{"max_epochs": 2, "batch_size": 16, "lr": 0.01, **train}),
        eval={"num_negatives": [5, 10], "length_edges": [5, 10]},
    )


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_training_stage_writes_every_artifact(ray_session, prepared_dir, tmp_path, name):
    config = stage(tmp_path, name)
    summary = run_training_stage(config, prepared_dir)
    out = tmp_path / "models" / name
    data = PreparedData(prepared_dir)
    for artifact in (
        "model.safetensors",
        "model_config.json",
        "item_embeddings.safetensors",
        "user_representations.safetensors",
        "metrics_valid.json",
        "metrics_test.json",
        "history.csv",
        "DONE.json",
        "stage_config.yaml",
    ):
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
    assert mean_metrics(ranks["full"].to_numpy(), [10])["ndcg@10"] == pytest.approx(
        metrics["metrics"]["full"]["ndcg@10"]
    )
    assert len(pd.read_csv(out / "history.csv")) == 2


def test_stage_is_keyed_on_content_resumes_only_its_own_checkpoints_and_force_starts_over(
    ray_session, prepared_dir, tmp_path, caplog
):
    from raylrec.errors import ArtifactError

    out = tmp_path / "models" / "sasrec"
    first = run_training_stage(stage(tmp_path, max_epochs=2, patience=50), prepared_dir)
    assert run_training_stage(stage(tmp_path, max_epochs=2, patience=50), prepared_dir) == first
    as_uri = stage(tmp_path, max_epochs=2, patience=50).model_copy(update={"run_dir": tmp_path.as_uri()})
    assert run_training_stage(as_uri, prepared_dir) == first  # the same folder spelt another way is the same stage
    quiet = stage(tmp_path, max_epochs=2, patience=50, progress_every_s=None)
    assert run_training_stage(quiet, prepared_dir) == first  # how often it reports is not what it computes
    saved_config = (out / "stage_config.yaml").read_text()
    # Other settings: never reused, not even with a warning; the error names the difference and the ways on.
    with pytest.raises(ArtifactError, match=r"train\.lr: 0\.01 there, 0\.02 here.*--force.*new run directory"):
        run_training_stage(stage(tmp_path, lr=0.02, max_epochs=2, patience=50), prepared_dir)
    assert (out / "stage_config.yaml").read_text() == saved_config  # not overwritten before the comparison

    # An interrupted run (its DONE.json not written yet) continues from its checkpoint when only the stopping
    # rules differ: rows 0–1 of its history are the first run's (a run from scratch has its own timings).
    (out / "DONE.json").unlink()
    before = pd.read_csv(out / "history.csv")
    resumed = run_training_stage(stage(tmp_path, max_epochs=3, patience=50), prepared_dir)
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2] and resumed["final_metrics"]["epoch"] == 2
    pd.testing.assert_frame_equal(history.iloc[:2].reset_index(drop=True), before, check_dtype=False)
    # …but never a checkpoint written with other settings.
    (out / "DONE.json").unlink()
    with pytest.raises(ArtifactError, match=r"unfinished run .* other settings .*train\.lr: 0\.01 there, 0\.02 here"):
        run_training_stage(stage(tmp_path, lr=0.02, max_epochs=3, patience=50), prepared_dir)

    # --force: the old folder is moved aside (and said so), and training starts from scratch, not from the epoch-3
    # checkpoint; from scratch it ends exactly where the resumed run did (same seed).
    with caplog.at_level(logging.WARNING, logger="raylrec.train.stage"):
        forced = run_training_stage(stage(tmp_path, max_epochs=3, patience=50), prepared_dir, force=True)
    aside = [p for p in tmp_path.joinpath("models").iterdir() if p.name.startswith("sasrec.old-")]
    assert len(aside) == 1 and f"moved the earlier {out} to {aside[0]}" in caplog.text
    pd.testing.assert_frame_equal(pd.read_csv(aside[0] / "history.csv"), history)  # the old run, kept
    fresh = pd.read_csv(out / "history.csv")
    assert fresh["epoch"].tolist() == [0, 1, 2]
    assert (fresh["elapsed_s"].iloc[:2].to_numpy() != history["elapsed_s"].iloc[:2].to_numpy()).all()
    assert len(list((out / TRAIN_RUN_NAME).glob("checkpoint_2*"))) == 2  # only this run's (num_to_keep=2)
    for metric, value in resumed["test"].items():
        assert forced["test"][metric] == pytest.approx(value, abs=1e-6), metric
    assert forced["stage_key"]["fingerprint"] == resumed["stage_key"]["fingerprint"]


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
        return torch.load(Path(directory) / STATE_FILE, weights_only=True)  # tensors and plain values only


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

    # Resumed for a second epoch (as after a driver lost before the export: DONE.json not written), the average
    # continues where it stopped: the same as two epochs in one go.
    (out / "DONE.json").unlink()
    run_training_stage(stage(tmp_path / "resumed", max_epochs=2, ema_decay=0.5), prepared_dir)
    run_training_stage(stage(tmp_path / "straight", max_epochs=2, ema_decay=0.5), prepared_dir)
    resumed = latest_training_state(out)["averaged_model"]
    straight = latest_training_state(tmp_path / "straight" / "models" / "sasrec")["averaged_model"]
    assert resumed["n_averaged"] == straight["n_averaged"] == 2 * saved["averaged_model"]["n_averaged"]
    assert all(torch.equal(resumed["model"][name], straight["model"][name]) for name in straight["model"])


def test_linear_schedule_warms_up_then_decays_to_zero():
    linear = TrainConfig(lr_schedule="linear", warmup_fraction=0.2)  # 10 steps: 2 of warm-up, 8 of decay
    assert [lr_factor(step, 10, linear) for step in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]
    assert [lr_factor(step, 4, TrainConfig(lr_schedule="linear")) for step in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert {lr_factor(step, 10, TrainConfig()) for step in range(10)} == {1.0}  # the default: constant


def test_epoch_budget_cycles_through_every_sample_before_repeating():
    epochs = [epoch_sample_indices(10, 4, epoch, seed=1) for epoch in range(5)]  # 20 draws = two full cycles
    assert all(len(e) == 4 for e in epochs)
    drawn = np.concatenate(epochs)
    assert sorted(drawn[:10]) == sorted(drawn[10:]) == list(range(10))
    assert not np.array_equal(drawn[:10], drawn[10:])  # each cycle has its own order
    assert np.array_equal(epoch_sample_indices(10, 4, 2, seed=1), epochs[2])  # a function of the epoch: resumable


def test_schedule_and_epoch_budget_in_a_stage(ray_session, prepared_dir, tmp_path):
    """64 samples an epoch at batch 16 = 4 steps; 2 epochs = 8 steps, 2 of warm-up: the last step of epoch 0 runs at
    (8 − 3) / 6 of the lr, the last of epoch 1 at 1/6."""
    run_training_stage(stage(tmp_path, lr_schedule="linear", warmup_fraction=0.25, samples_per_epoch=64), prepared_dir)
    history = pd.read_csv(tmp_path / "models" / "sasrec" / "history.csv")
    assert history["lr_last"].tolist() == pytest.approx([0.01 * 5 / 6, 0.01 / 6])


def test_validate_start_keeps_the_untrained_weights_unless_an_epoch_beats_them(ray_session, prepared_dir, tmp_path):
    summary = run_training_stage(stage(tmp_path, validate_start=True, lr=0.0, max_epochs=1), prepared_dir)
    assert summary["final_metrics"]["best_epoch"] == -1  # lr 0: epoch 0 ties the start and does not replace it


@pytest.mark.parametrize(
    "train, error",
    [
        (dict(warmup_fraction=0.1), "needs train.lr_schedule: linear"),
        (dict(ema_decay=1.0), "less than 1"),
        (dict(ema_decay=0.99, deepspeed="zero2"), "only one of ema_decay and deepspeed"),
        (dict(loss="bce", label_smoothing=0.1), "needs train.loss: ce"),
        (dict(label_smoothing=1.0), "less than 1"),
    ],
)
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


def test_a_diverged_epoch_is_never_selected_and_is_recorded(ray_session, prepared_dir, tmp_path):
    """The loss turns NaN in epoch 1 (a real NaN through backward and Adam, not a raised exception): training stops
    there, epoch 0 stays the selected model (finite metrics), and DONE.json records the divergence. A stage whose
    very first epoch diverges fails with an error naming the stage and the epoch."""
    from raylrec.errors import RaylrecError
    from raylrec.train.id_model import IDModelRecipe
    from raylrec.train.stage import StageJob, run_stage

    class DivergingRecipe(IDModelRecipe):  # defined here: shipped to the Ray Train workers by value
        def __init__(self, config, nan_from_epoch: int, batches_per_epoch: int):
            super().__init__(config)
            self.nan_from_batch = nan_from_epoch * batches_per_epoch
            self.batches = 0

        def loss(self, model, core, batch, generator):
            self.batches += 1
            loss = super().loss(model, core, batch, generator)
            return loss * float("nan") if self.batches > self.nan_from_batch else loss

    config = stage(tmp_path, max_epochs=4, patience=50)
    recipe = IDModelRecipe(config)
    batches = -(-len(recipe.training_tensors(PreparedData(prepared_dir))[0]) // config.train.batch_size)

    def job(name: str, nan_from_epoch: int) -> StageJob:
        named = config.model_copy(update={"name": name})
        return StageJob(
            DivergingRecipe(named, nan_from_epoch, batches),
            named.train,
            named.eval,
            prepared_dir,
            str(tmp_path),
            named.to_yaml(),
        )

    summary = run_stage(job("late", 1))
    history = pd.read_csv(tmp_path / "models" / "late" / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and history["diverged"].tolist() == [False, True]
    assert summary["diverged_at_epoch"] == 1 and summary["final_metrics"]["best_epoch"] == 0
    assert all(np.isfinite(v) and 0 <= v <= 1 for v in summary["test"].values())
    with pytest.raises(RaylrecError, match=r"stage early diverged at epoch 0 .*Lower train\.lr"):
        run_stage(job("early", 0))
    assert not (tmp_path / "models" / "early" / "DONE.json").exists()


def test_a_diverged_trial_is_recorded_and_never_selected():
    from raylrec.tune.space import SweepSpec
    from raylrec.tune.sweep import pick_best

    spec = SweepSpec(method="sasrec", space={"train.lr": {"grid": [0.1, 0.2, 0.3]}})
    rows = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c"],
            "status": ["COMPLETED", "DIVERGED", "ERROR"],
            spec.metric: [0.2, 0.9, np.nan],
            "param:train.lr": [0.1, 0.2, 0.3],
        }
    )
    assert pick_best(rows, spec)["trial_id"] == "a"


def test_the_lr_schedule_scales_each_parameter_group_from_its_own_lr():
    from torch import nn

    from raylrec.train.loop import last_lrs, train_one_epoch

    class TwoGroups:  # a recipe whose text-encoder group trains at a tenth of the lr
        def loss(self, model, core, batch, generator):
            return (model(batch[0]) ** 2).sum()

    core = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    optimizer = torch.optim.Adam(
        [{"params": core[0].parameters(), "lr": 1e-4}, {"params": core[1].parameters()}], lr=1e-3
    )
    loader = [(torch.ones(1, 2),)] * 2
    train_one_epoch(TwoGroups(), core, core, loader, optimizer, torch.Generator(), lr_factors=[1.0, 0.5])
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.5e-4, 0.5e-3])
    assert [group["initial_lr"] for group in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])
    assert last_lrs(optimizer) == pytest.approx({"lr_last": 0.5e-4, "lr_last_group1": 0.5e-3})  # history.csv


def test_a_long_epoch_prints_progress_from_the_first_worker_only(capsys):
    from torch import nn

    from raylrec.train.loop import train_one_epoch

    class Squares:
        def loss(self, model, core, batch, generator):
            return (model(batch[0]) ** 2).sum()

    core = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(core.parameters(), lr=0.0)  # lr 0: every batch's loss is the same
    loader = [(torch.ones(1, 2),)] * 3
    loss = train_one_epoch(
        Squares(), core, core, loader, optimizer, torch.Generator(), progress_label="s epoch 0", progress_every_s=0.0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"[s epoch 0] batch {b}/3, loss so far {loss:.4f}" for b in (1, 2)]  # the epoch line says the rest
    train_one_epoch(Squares(), core, core, loader, optimizer, torch.Generator(), progress_every_s=0.0)  # not rank 0
    train_one_epoch(
        Squares(), core, core, loader, optimizer, torch.Generator(), progress_label="s", progress_every_s=60
    )
    assert capsys.readouterr().out == ""
