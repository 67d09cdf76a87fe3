"""The Ray Train loop every training stage runs on each worker: DDP training of a recipe's module,
validation every epoch, one `ray.train.report` (metrics + checkpoint) per epoch, early stopping on a
validation metric, and resume from a checkpoint."""

from __future__ import annotations

import copy
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.eval.metrics import mean_metrics
from raylrec.train.config import TrainConfig
from raylrec.train.recipe import Recipe

STATE_FILE = "training_state.pt"
BEST_MODEL_FILE = "best_model.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gather_ranks(local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Collect every worker's validation ranks so all workers see the same full-split metrics."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return {k: np.concatenate([p[k] for p in parts]) for k in local}


def train_one_epoch(recipe: Recipe, model, core, loader, optimizer, generator: torch.Generator) -> float:
    model.train()
    total, batches = 0.0, 0
    for batch in loader:
        loss = recipe.loss(model, core, batch, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / max(batches, 1)


def load_training_state(checkpoint: ray.train.Checkpoint, core, optimizer) -> tuple[dict, dict]:
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / STATE_FILE, weights_only=False)
        best_model = torch.load(Path(directory) / BEST_MODEL_FILE, weights_only=True)
    core.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["rng"])
    return saved["state"], best_model


def train_loop_per_worker(loop_config: dict) -> None:
    recipe: Recipe = loop_config["recipe"]
    train: TrainConfig = loop_config["train"]
    eval_config: EvalConfig = loop_config["eval"]
    torch.set_num_threads(train.threads_per_worker)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(train.seed + rank)

    data = PreparedData(loop_config["data_dir"])
    core = recipe.build(data)
    trainable = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=train.lr, weight_decay=train.weight_decay)
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": -1, "bad_epochs": 0}
    best_model = copy.deepcopy(core.state_dict())
    # Ray's own checkpoint after a worker failure; else the latest one a previous run of this stage left.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_from"])
    if checkpoint:
        state, best_model = load_training_state(checkpoint, core, optimizer)

    model = ray.train.torch.prepare_model(core)
    device = ray.train.torch.get_device()
    loader = ray.train.torch.prepare_data_loader(DataLoader(
        TensorDataset(*recipe.training_tensors(data)), batch_size=train.batch_size, shuffle=True))
    generator = torch.Generator(device=device).manual_seed(train.seed + 7919 * rank)
    evaluator = Evaluator(data, "valid", eval_config)
    my_users = np.arange(rank, data.num_users, world)
    metric = train.select_metric
    loop_started = time.perf_counter()

    # A resumed run continues only while the (possibly changed) stopping rule allows.
    last_epoch = train.max_epochs if state["bad_epochs"] < train.patience else state["epoch"]
    for epoch in range(state["epoch"], last_epoch):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss = train_one_epoch(recipe, model, core, loader, optimizer, generator)
        train_seconds = time.perf_counter() - started
        core.eval()
        with torch.no_grad():
            ranks = gather_ranks(evaluator.ranks(recipe.scorer(core, data, "valid", device), my_users))
        valid = mean_metrics(ranks["full"], eval_config.ks)
        if valid[metric] > state["best"]:
            state.update(best=valid[metric], best_epoch=epoch, bad_epochs=0)
            best_model = copy.deepcopy(core.state_dict())
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        stop = state["bad_epochs"] >= train.patience or state["epoch"] >= train.max_epochs
        metrics = {"epoch": epoch, "train_loss": train_loss, "epoch_train_s": train_seconds,
                   "elapsed_s": time.perf_counter() - loop_started,
                   **{f"valid_{k}": v for k, v in valid.items() if k != "n"},
                   f"best_valid_{metric}": state["best"], "best_epoch": state["best_epoch"], "stopped": stop}
        if rank == 0:
            print(f"[{recipe.name}] epoch {epoch}: loss {train_loss:.4f}, valid {metric} {valid[metric]:.4f} "
                  f"(best {state['best']:.4f} @ {state['best_epoch']}), {train_seconds:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as directory:
            reported = None
            if rank == 0:
                torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                            "rng": torch.get_rng_state()}, Path(directory) / STATE_FILE)
                torch.save(best_model, Path(directory) / BEST_MODEL_FILE)
                reported = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=reported)
        if stop:
            break
