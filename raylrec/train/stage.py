"""Run one ID-model training stage as a Ray Train job and export what later stages consume.

Artifacts under `<run_dir>/models/<name>/`:
  stage_config.yaml                resolved config of this stage
  train/                           Ray Train storage (per-epoch checkpoints; a rerun resumes from the latest)
  model.safetensors, model_config.json
  item_embeddings.safetensors      `item_embeddings` (num_items + 1, d), row 0 = padding
  user_representations.safetensors `valid`, `test` (num_users, d): user vectors that predict each split's target;
                                   `train_hidden` (num_users, L, d) over `train_inputs` (num_users, L), whose
                                   next items are `train_targets` — the last training window of every user
  metrics_valid.json, metrics_test.json, history.csv, DONE.json
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file, save_file

from raylrec.data.prepared import PreparedData, left_pad_tails
from raylrec.errors import ArtifactError
from raylrec.eval.evaluator import Evaluator, write_metrics
from raylrec.models.base import SequentialRecommender, build_model
from raylrec.paths import RunLayout
from raylrec.ray_utils import cluster_has_gpus, ensure_ray
from raylrec.train.config import StageConfig
from raylrec.train.loop import BEST_MODEL_FILE, model_scorer, train_loop_per_worker

log = logging.getLogger(__name__)
DONE_FILE = "DONE.json"
TRAIN_RUN_NAME = "train"


def latest_checkpoint(train_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint a previous run of this stage left (Ray names them by timestamp)."""
    candidates = sorted(p for p in train_dir.glob("checkpoint_*") if (p / BEST_MODEL_FILE).exists())
    return Checkpoint.from_directory(str(candidates[-1])) if candidates else None


def stage_dir(config: StageConfig) -> Path:
    return RunLayout(config.run_dir).model_dir(config.stage_name)


def run_training_stage(config: StageConfig, data_dir: Path, force: bool = False) -> dict:
    """Train (or resume, or skip when already done) one model; returns the stage summary."""
    out = stage_dir(config)
    done = out / DONE_FILE
    if done.exists() and not force:
        log.info("stage %s already done (%s); skipping", config.stage_name, done)
        return json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_config.yaml").write_text(config.to_yaml())
    ensure_ray()
    resume_from = latest_checkpoint(out / TRAIN_RUN_NAME)
    if resume_from:
        log.info("resuming %s from %s", config.stage_name, resume_from.path)
    use_gpu = cluster_has_gpus() if config.train.use_gpu == "auto" else config.train.use_gpu
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"stage": config.model_dump(mode="json"), "data_dir": str(data_dir),
                           "resume_from": resume_from.path if resume_from else None},
        scaling_config=ScalingConfig(num_workers=config.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": config.train.cpus_per_worker}),
        run_config=RunConfig(
            name=TRAIN_RUN_NAME,
            storage_path=str(out),
            failure_config=FailureConfig(max_failures=config.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Ray Train logs every report in full at INFO; the epoch line below and history.csv say it once.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    final_checkpoint = result.checkpoint or resume_from
    if final_checkpoint is None:
        raise ArtifactError(f"training of {config.stage_name} reported no checkpoint (see {out / TRAIN_RUN_NAME})")
    if result.metrics_dataframe is not None:
        result.metrics_dataframe.to_csv(out / "history.csv", index=False)
    with final_checkpoint.as_directory() as directory:
        best_state = torch.load(Path(directory) / BEST_MODEL_FILE, weights_only=True)
    summary = export_stage(config, PreparedData(data_dir), best_state, out)
    summary.update(fit_wall_s=round(wall, 1), final_metrics={k: v for k, v in result.metrics.items()
                                                               if isinstance(v, (int, float))})
    done.write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def export_stage(config: StageConfig, data: PreparedData, state: dict, out: Path) -> dict:
    """Save the best model, its embeddings and user representations, and its valid/test metrics."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(data.num_items, config.model)
    model.load_state_dict(state)
    model.eval()
    save_file({k: v.contiguous() for k, v in state.items()}, out / "model.safetensors")
    (out / "model_config.json").write_text(
        json.dumps({"num_items": data.num_items, **config.model.model_dump(mode="json")}, indent=2))
    save_file({"item_embeddings": model.item_table().detach().contiguous()}, out / "item_embeddings.safetensors")
    save_file(user_representations(model, data), out / "user_representations.safetensors")

    stage_config = config.model_dump(mode="json")
    summary = {"stage": config.stage_name, "model": config.model.name,
               "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    for split in ("valid", "test"):
        metrics = Evaluator(data, split, config.eval).evaluate(model_scorer(model, data, split, torch.device("cpu")))
        write_metrics(out / f"metrics_{split}.json", model=config.stage_name, split=split, metrics=metrics,
                      config=stage_config, data=data, extra={"trainable_params": summary["trainable_params"]})
        summary[split] = {k: v for k, v in metrics["full"].items() if k != "n"}
    return summary


def user_representations(model: SequentialRecommender, data: PreparedData, batch_size: int = 1024) -> dict:
    max_len = model.config.max_len
    users = np.arange(data.num_users)
    train_window = left_pad_tails(data.history("train"), users, max_len + 1)
    tensors = {"train_inputs": torch.from_numpy(train_window[:, :-1]),
               "train_targets": torch.from_numpy(train_window[:, 1:])}
    hidden = [model.encode(tensors["train_inputs"][s:s + batch_size]) for s in range(0, len(users), batch_size)]
    tensors["train_hidden"] = torch.cat(hidden)
    for split in ("valid", "test"):
        windows = torch.from_numpy(data.input_windows(split, users, max_len))
        tensors[split] = torch.cat([model.user_vector(windows[s:s + batch_size])
                                    for s in range(0, len(users), batch_size)])
    return {k: v.contiguous() for k, v in tensors.items()}


def load_stage_model(model_dir: Path) -> SequentialRecommender:
    """The exported best model of a finished stage, for later stages to use frozen."""
    from raylrec.models.base import ModelConfig

    config_file, weights = model_dir / "model_config.json", model_dir / "model.safetensors"
    for path in (config_file, weights):
        if not path.exists():
            raise ArtifactError(f"missing artifact {path}: train this model first (`raylrec train`)")
    saved = json.loads(config_file.read_text())
    model = build_model(saved.pop("num_items"), ModelConfig(**saved))
    model.load_state_dict(load_file(weights))
    return model.eval()
