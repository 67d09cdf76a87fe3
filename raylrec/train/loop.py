"""The Ray Train loop run by every worker: DDP training of one ID model, validation every epoch,
one `ray.train.report` (metrics + checkpoint) per epoch, early stopping on validation."""

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
from raylrec.eval.evaluator import Evaluator
from raylrec.eval.metrics import mean_metrics
from raylrec.models.base import SequentialRecommender, build_model
from raylrec.train.config import StageConfig
from raylrec.train.losses import bce_loss, cross_entropy_loss, sample_negatives

STATE_FILE = "training_state.pt"
BEST_MODEL_FILE = "best_model.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def model_scorer(model: SequentialRecommender, data: PreparedData, split: str, device: torch.device):
    """Score function for the evaluator: the model's user vector at the split's input window."""

    def score(users: np.ndarray) -> torch.Tensor:
        window = torch.from_numpy(data.input_windows(split, users, model.config.max_len)).to(device)
        return model.score_all(model.user_vector(window))

    return score


def gather_ranks(local: dict[str, np.ndarray], local_users: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Collect every worker's validation ranks so all workers see the same full-split metrics."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, local_users
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, (local, local_users))
    users = np.concatenate([p[1] for p in parts])
    return {k: np.concatenate([p[0][k] for p in parts]) for k in local}, users


def train_one_epoch(model, core: SequentialRecommender, loader, optimizer, loss_name: str,
                    generator: torch.Generator) -> float:
    model.train()
    total, batches = 0.0, 0
    for inputs, targets in loader:
        hidden = model(inputs)
        if loss_name == "ce":
            loss = cross_entropy_loss(core, hidden, targets)
        else:
            seen = torch.cat([inputs, targets], dim=1)
            loss = bce_loss(core, hidden, targets, sample_negatives(targets, seen, core.num_items, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item()
        batches += 1
    return total / max(batches, 1)


def train_loop_per_worker(loop_config: dict) -> None:
    config = StageConfig.model_validate(loop_config["stage"])
    torch.set_num_threads(config.train.threads_per_worker)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(config.train.seed + rank)

    data = PreparedData(loop_config["data_dir"])
    core = build_model(data.num_items, config.model)
    optimizer = torch.optim.Adam(core.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": -1, "bad_epochs": 0}
    best_model = copy.deepcopy(core.state_dict())
    # Ray's own checkpoint after a worker failure; else the latest one a previous run of this stage left.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and loop_config.get("resume_from"):
        checkpoint = ray.train.Checkpoint.from_directory(loop_config["resume_from"])
    if checkpoint:
        with checkpoint.as_directory() as directory:
            saved = torch.load(Path(directory) / STATE_FILE, weights_only=False)
            best_model = torch.load(Path(directory) / BEST_MODEL_FILE, weights_only=True)
        core.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        torch.set_rng_state(saved["rng"])

    model = ray.train.torch.prepare_model(core)
    device = ray.train.torch.get_device()
    inputs, targets = data.train_windows(config.model.max_len, config.train.window_stride)
    loader = ray.train.torch.prepare_data_loader(DataLoader(
        TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets)),
        batch_size=config.train.batch_size, shuffle=True))
    generator = torch.Generator(device=device).manual_seed(config.train.seed + 7919 * rank)
    evaluator = Evaluator(data, "valid", config.eval)
    my_users = np.arange(rank, data.num_users, world)
    metric = config.train.select_metric
    loop_started = time.perf_counter()

    # A resumed run continues only while the (possibly changed) stopping rule allows.
    last_epoch = config.train.max_epochs if state["bad_epochs"] < config.train.patience else state["epoch"]
    for epoch in range(state["epoch"], last_epoch):
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        started = time.perf_counter()
        train_loss = train_one_epoch(model, core, loader, optimizer, config.train.loss, generator)
        train_seconds = time.perf_counter() - started
        core.eval()
        ranks, users = gather_ranks(evaluator.ranks(model_scorer(core, data, "valid", device), my_users), my_users)
        valid = mean_metrics(ranks["full"], config.eval.ks)
        if valid[metric] > state["best"]:
            state.update(best=valid[metric], best_epoch=epoch, bad_epochs=0)
            best_model = copy.deepcopy(core.state_dict())
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        stop = state["bad_epochs"] >= config.train.patience or state["epoch"] >= config.train.max_epochs
        metrics = {"epoch": epoch, "train_loss": train_loss, "epoch_train_s": train_seconds,
                   "elapsed_s": time.perf_counter() - loop_started,
                   **{f"valid_{k}": v for k, v in valid.items() if k != "n"},
                   f"best_valid_{metric}": state["best"], "best_epoch": state["best_epoch"], "stopped": stop}
        if rank == 0:
            print(f"[{config.stage_name}] epoch {epoch}: loss {train_loss:.4f}, valid {metric} {valid[metric]:.4f} "
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
