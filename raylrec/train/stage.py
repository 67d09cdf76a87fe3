"""Run one training stage as a Ray Train job and export what later stages consume.

Artifacts under the stage directory (`<run_dir>/models/<name>/` for ID models):
  stage_config.yaml            resolved config of this stage
  train/                       Ray Train storage (per-epoch checkpoints; a rerun resumes from the latest)
  model.safetensors            the best model's state (chosen on validation)
  metrics_valid.json, metrics_test.json, history.csv, DONE.json
  ranks_valid.parquet, ranks_test.parquet   per-user ranks (raylrec/eval/ranks.py), for paired comparisons
  + the recipe's own artifacts (for ID models: model_config.json, item_embeddings.safetensors,
    user_representations.safetensors — see raylrec/train/id_model.py)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch
import yaml
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import save_file

from raylrec.config import flatten
from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError
from raylrec.eval.evaluator import EvalConfig, Evaluator, write_metrics
from raylrec.eval.ranks import ranks_file
from raylrec.paths import RunLayout
from raylrec.ray_utils import cluster_has_gpus, ensure_ray
from raylrec.storage import RunStore, filesystem_of
from raylrec.train.config import StageConfig, TrainConfig
from raylrec.train.id_model import IDModelRecipe
from raylrec.train.loop import BEST_MODEL_FILE, STATE_FILE, load_model_state, train_loop_per_worker
from raylrec.train.recipe import Recipe
from raylrec.train.stage_context import apply_stage_context

log = logging.getLogger(__name__)
DONE_FILE = "DONE.json"
TRAIN_RUN_NAME = "train"


@dataclass
class StageJob:
    """One stage to run: the recipe, how to train and evaluate it, and where its artifacts go."""

    recipe: Recipe
    train: TrainConfig
    eval: EvalConfig
    data_dir: Path
    run_dir: str  # the run directory's location; a URI one is synced through its mirror
    config_yaml: str

    @cached_property
    def out(self) -> Path:
        """The stage's artifact folder: models/<recipe name> in the run directory (its mirror for a URI)."""
        return RunLayout(self.run_dir).model_dir(self.recipe.name)


def latest_checkpoint(train_location: str) -> Checkpoint | None:
    """The newest complete checkpoint a previous run of this stage left (Ray names them by timestamp), wherever
    Ray Train's storage is (a local folder or an object store)."""
    import pyarrow.fs

    filesystem, path = filesystem_of(train_location)
    listing = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    folders = sorted(info.path for info in listing
                     if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))
    complete = [folder for folder in folders
                if all(info.type == pyarrow.fs.FileType.File
                       for info in filesystem.get_file_info([f"{folder}/{BEST_MODEL_FILE}", f"{folder}/{STATE_FILE}"]))]
    return Checkpoint(path=complete[-1], filesystem=filesystem) if complete else None


def run_stage(job: StageJob, force: bool = False) -> dict:
    """Train (or resume, or skip when already done) one stage; returns the stage summary."""
    out, done = job.out, job.out / DONE_FILE
    store = RunStore(job.run_dir)
    store.pull()  # a stage may read any earlier artifact of the run (backbones, text embeddings)
    if done.exists() and not force:
        log.info("stage %s already done (%s); skipping", job.recipe.name, done)
        warn_if_config_differs(job)
        return json.loads(done.read_text())
    job, callbacks = apply_stage_context(job)  # inside a Ray Tune trial: its reporting and CPU share
    PreparedData(job.data_dir)  # fail fast, naming the bad or missing artifact, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_config.yaml").write_text(job.config_yaml)
    ensure_ray()
    storage = store.locate(out)  # Ray Train's storage: an object-store URI is written by Ray itself
    resume_from = latest_checkpoint(f"{storage}/{TRAIN_RUN_NAME}")
    if resume_from:
        log.info("resuming %s from %s", job.recipe.name, resume_from.path)
    use_gpu = cluster_has_gpus() if job.train.use_gpu == "auto" else job.train.use_gpu
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"recipe": job.recipe, "train": job.train, "eval": job.eval,
                           "data_dir": str(job.data_dir), "run_dir": job.run_dir, "resume_from": resume_from},
        scaling_config=ScalingConfig(num_workers=job.train.num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": job.train.cpus_per_worker}),
        run_config=RunConfig(
            name=TRAIN_RUN_NAME,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=job.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=callbacks or None,
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    final_checkpoint = result.checkpoint or resume_from
    if final_checkpoint is None:
        raise ArtifactError(f"training of {job.recipe.name} reported no checkpoint (see {storage}/{TRAIN_RUN_NAME})")
    with final_checkpoint.as_directory() as directory:
        best_state = torch.load(Path(directory) / BEST_MODEL_FILE, weights_only=True)
        history = torch.load(Path(directory) / STATE_FILE, weights_only=False)["state"]["history"]
    pd.DataFrame(history).to_csv(out / "history.csv", index=False)
    summary = export_stage(job, PreparedData(job.data_dir), best_state)
    summary.update(fit_wall_s=round(wall, 1), final_metrics={k: v for k, v in result.metrics.items()
                                                               if isinstance(v, (int, float))})
    done.write_text(json.dumps(summary, indent=2))
    store.push(out)
    return summary


def warn_if_config_differs(job: StageJob) -> None:
    """A finished stage is reused as it is (methods share ID backbones by stage name); say so loudly when it was
    trained with other settings than this run asks for, naming them."""
    saved_file = job.out / "stage_config.yaml"
    if not saved_file.exists():
        return
    saved, wanted = (flatten(yaml.safe_load(text) or {}) for text in (saved_file.read_text(), job.config_yaml))
    # run_dir: the stage was found in it, whichever way the path is spelt (relative, absolute, file://)
    differing = sorted(k for k in saved.keys() | wanted.keys() if saved.get(k) != wanted.get(k) and k != "run_dir")
    if differing:
        log.warning("stage %s: reusing the finished stage at %s, trained with other settings than requested "
                    "(%s); use --force or another stage name to train it with these",
                    job.recipe.name, job.out,
                    ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} here" for k in differing))


@torch.no_grad()
def export_stage(job: StageJob, data: PreparedData, state: dict) -> dict:
    """Save the best model and the recipe's artifacts, and evaluate it on validation and test."""
    core = job.recipe.build(data)
    load_model_state(core, state)  # a trainable-only state when the recipe does not save frozen parts
    core.eval()
    save_file({k: v.contiguous() for k, v in state.items()}, job.out / "model.safetensors")
    summary = {"stage": job.recipe.name,
               "trainable_params": sum(p.numel() for p in core.parameters() if p.requires_grad),
               **job.recipe.export(core, data, job.out)}
    config = {"method": job.recipe.config_dump(), "train": job.train.model_dump(mode="json"),
              "eval": job.eval.model_dump(mode="json")}
    lineage = {"role": "id_model" if job.recipe.is_id_model else "method", "backbone": job.recipe.backbone_stage()}
    for split in job.recipe.export_splits:
        evaluator = Evaluator(data, split, job.eval)
        ranks = evaluator.ranks(job.recipe.scorer(core, data, split, torch.device("cpu")))
        evaluator.write_ranks(ranks_file(job.out, split), ranks)
        metrics = evaluator.summarize(ranks)
        write_metrics(job.out / f"metrics_{split}.json", model=job.recipe.name, split=split, metrics=metrics,
                      config=config, data=data, extra={"trainable_params": summary["trainable_params"], **lineage})
        summary[split] = {k: v for k, v in metrics["full"].items() if k != "n"}
    return summary


def stage_dir(config: StageConfig) -> Path:
    return RunLayout(config.run_dir).model_dir(config.stage_name)


def run_training_stage(config: StageConfig, data_dir: Path, force: bool = False) -> dict:
    """Train one ID backbone (SASRec, GRU4Rec, …) as configured."""
    job = StageJob(recipe=IDModelRecipe(config), train=config.train, eval=config.eval, data_dir=Path(data_dir),
                   run_dir=config.run_dir, config_yaml=config.to_yaml())
    return run_stage(job, force=force)
