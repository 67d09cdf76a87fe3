"""The Ray Train loop every training stage runs on each worker: DDP training of a recipe's module,
validation every epoch, one `ray.train.report` (metrics + checkpoint) per epoch, early stopping on a
validation metric, and resume from a checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler, Subset, TensorDataset

from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.eval.metrics import mean_metrics
from raylrec.monitoring import record_epoch
from raylrec.storage import RunStore
from raylrec.train import deepspeed_engine
from raylrec.train.config import TrainConfig
from raylrec.train.recipe import Recipe

STATE_FILE = "training_state.pt"
BEST_MODEL_FILE = "best_model.pt"
KEY_FILE = "stage_key.json"  # in every checkpoint: the stage key of the settings that wrote it (train/stage.py)


def progress(line: str) -> None:
    """One line to the worker's stdout, which Ray forwards to the driver. Not `print`: Ray Train patches it in
    workers to log the line and also echo it to the redirected stdout, so the driver showed every line twice."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def quiet_report_logs() -> None:
    """Ray Train 2.60 logs every report, all its metrics included, at INFO through a logger named after its source
    file, which `LoggingConfig(log_level=...)` does not reach (it filters `ray.train.*`); hold that one at WARNING."""
    report_module = sys.modules.get("ray.train.v2._internal.execution.context")
    if report_module is not None:
        logging.getLogger(report_module.__file__).setLevel(logging.WARNING)


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


def lr_factor(step: int, total_steps: int, train: TrainConfig) -> float:
    """The multiple of `train.lr` used at optimizer step `step` (0-based) of `total_steps`: 1 for a constant
    schedule; for `linear`, (step + 1) / warm-up steps during the warm-up, then a linear decay reaching 0 after
    the last step."""
    if train.lr_schedule == "constant":
        return 1.0
    warmup = int(train.warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def epoch_sample_indices(num_samples: int, per_epoch: int, epoch: int, seed: int) -> np.ndarray:
    """Epoch `epoch`'s `per_epoch` sample indices: the next slice of a cycle through all samples, each cycle in its
    own seeded random order, so every sample is used once before any is used again (the same on every worker,
    and a function of the epoch only, so a resumed run continues the cycle)."""
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    cycles = range(start // num_samples, (stop - 1) // num_samples + 1)
    order = np.concatenate([np.random.default_rng([seed, c]).permutation(num_samples) for c in cycles])
    offset = cycles[0] * num_samples
    return order[start - offset : stop - offset]


def epoch_loader(dataset: TensorDataset, train: TrainConfig, epoch: int) -> DataLoader:
    """The epoch's shuffled data loader (sharded over the workers): every sample, or `train.samples_per_epoch`
    of them (`epoch_sample_indices`)."""
    if train.samples_per_epoch is not None and train.samples_per_epoch < len(dataset):
        dataset = Subset(dataset, epoch_sample_indices(len(dataset), train.samples_per_epoch, epoch, train.seed))
    return ray.train.torch.prepare_data_loader(DataLoader(dataset, batch_size=train.batch_size, shuffle=True))


def train_one_epoch(
    recipe: Recipe,
    model,
    core,
    loader,
    optimizer,
    generator: torch.Generator,
    engine=None,
    averaged: AveragedModel | None = None,
    lr_factors: list[float] | None = None,
    progress_label: str | None = None,
    progress_every_s: float | None = None,
) -> float:
    """One pass over the loader; `engine` (a DeepSpeed engine, also passed as `model`) steps instead of `optimizer`;
    `averaged` follows the weights after every step; `lr_factors`, when given, scales each parameter group's own
    initial lr at each step; with a `progress_label`, a line `[label] batch b/n, loss so far …` at most every
    `progress_every_s` seconds."""
    model.train()
    total, batches = 0.0, 0
    last_line = time.perf_counter()
    for batch in loader:
        if lr_factors is not None:
            # Each group keeps its own lr (e.g. a fine-tuned text encoder's), saved as `initial_lr` before the first
            # scheduled step (the key torch's schedulers use; restored with the optimizer state on resume).
            for group in optimizer.param_groups:
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * lr_factors[batches]
        loss = recipe.loss(model, core, batch, generator)
        if engine is not None:
            engine.backward(loss)
            engine.step()
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if averaged is not None:
            averaged.update_parameters(core)
        total += loss.item()
        batches += 1
        due = progress_every_s is not None and time.perf_counter() - last_line >= progress_every_s
        if progress_label is not None and due and batches < len(loader):  # the last batch: the epoch's line says it
            progress(f"[{progress_label}] batch {batches}/{len(loader)}, loss so far {total / batches:.4f}")
            last_line = time.perf_counter()
    return total / max(batches, 1)


def last_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The lr each parameter group ran its last step at (`lr_last`; a group with its own lr, e.g. a fine-tuned
    text encoder's, as `lr_last_group<i>`)."""
    lrs = [group["lr"] for group in optimizer.param_groups]
    return {"lr_last": lrs[0], **{f"lr_last_group{i}": lr for i, lr in enumerate(lrs[1:], 1)}}


def build_optimizer(recipe: Recipe, core, train: TrainConfig) -> torch.optim.Optimizer:
    optimizer_class = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(recipe.parameter_groups(core), lr=train.lr, weight_decay=train.weight_decay)


def weight_average(core, train: TrainConfig, saved: dict | None) -> AveragedModel | None:
    """The exponential moving average of the module's weights, when `train.ema_decay` asks for one; continued from
    the checkpoint's `saved` loop state when it holds one."""
    if train.ema_decay is None:
        return None
    averaged = AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(train.ema_decay))
    if saved is not None and "averaged_model" in saved:
        load_model_state(averaged.module, saved["averaged_model"]["model"])
        averaged.n_averaged.copy_(saved["averaged_model"]["n_averaged"])
    return averaged


def rng_state(generator: torch.Generator) -> dict:
    """Every random stream one worker draws from (dropout, shuffling, sampled negatives), as tensors and plain
    Python values only, so checkpoints load with `torch.load(weights_only=True)` (no pickled numpy objects)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy": (str(name), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }


def gather_rng_states(generator: torch.Generator) -> list[dict]:
    """Each rank's random streams, in rank order (a collective: every rank calls it)."""
    local = rng_state(generator)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return parts


def restore_rng(saved: dict, rank: int, world: int, generator: torch.Generator) -> None:
    """Continue each rank's random streams where the checkpoint left them, so a run restored after a failure
    draws the same numbers as one that never failed (same world size; otherwise only rank 0's torch stream)."""
    states = saved.get("rng_by_rank")
    if states and len(states) == world:
        state = states[rank]
        torch.set_rng_state(state["torch"])
        generator.set_state(state["generator"])
        name, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["python"])
    else:
        torch.set_rng_state(saved["rng"])


def model_state(recipe: Recipe, core, ds_config: dict | None = None) -> dict:
    """What a checkpoint keeps of the module: all of it, or only the trainable part when the recipe rebuilds its
    frozen parts (`Recipe.save_frozen = False`, e.g. a frozen LLM) or DeepSpeed trains it (a collective under
    ZeRO-3: every rank calls it)."""
    if ds_config is not None or not recipe.save_frozen:
        return deepspeed_engine.trainable_state(core, ds_config)
    return copy.deepcopy(core.state_dict())


def load_model_state(core, state: dict) -> None:
    """Load a (possibly trainable-only) state; only frozen parameters may be missing from it."""
    missing, unexpected = core.load_state_dict(state, strict=False)
    frozen = deepspeed_engine.frozen_names(core)
    missing = [k for k in missing if k not in frozen]
    if missing or unexpected:
        raise ArtifactError(
            f"saved model state does not fit the module: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def validation_users(num_users: int, train: TrainConfig) -> np.ndarray:
    """Every user, or a fixed random sample of `train.valid_users` of them (same on every worker and epoch)."""
    if train.valid_users is None or train.valid_users >= num_users:
        return np.arange(num_users)
    return np.sort(np.random.default_rng(train.seed).choice(num_users, train.valid_users, replace=False))


def load_training_state(checkpoint: ray.train.Checkpoint, core, optimizer) -> tuple[dict, dict, dict]:
    """Loop state, best model and the raw saved dict; module and optimizer states when the checkpoint has them
    (a DeepSpeed checkpoint keeps those in DeepSpeed's own files instead)."""
    with checkpoint.as_directory() as directory:
        saved = torch.load(Path(directory) / STATE_FILE, weights_only=True)
        best_model = torch.load(Path(directory) / BEST_MODEL_FILE, weights_only=True)
    if "model" in saved:
        load_model_state(core, saved["model"])
    if optimizer is not None and "optimizer" in saved:
        optimizer.load_state_dict(saved["optimizer"])
    return saved["state"], best_model, saved


def train_loop_per_worker(loop_config: dict) -> None:
    recipe: Recipe = loop_config["recipe"]
    train: TrainConfig = loop_config["train"]
    eval_config: EvalConfig = loop_config["eval"]
    torch.set_num_threads(train.threads_per_worker)
    quiet_report_logs()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    seed_everything(train.seed + rank)

    if loop_config.get("run_dir"):  # on a node without the run directory: its mirror, synced
        RunStore(loop_config["run_dir"]).pull()
    data = PreparedData(loop_config["data_dir"])
    core = recipe.build(data)
    optimizer = build_optimizer(recipe, core, train)
    # `history` rides in every checkpoint, so per-epoch metrics survive failures and resumes.
    state = {"epoch": 0, "best": float("-inf"), "best_epoch": -1, "bad_epochs": 0, "history": []}
    # Ray's own checkpoint after a worker failure; else the latest one a previous run of this stage left.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        checkpoint = loop_config.get("resume_from")
    saved = None
    engine, ds_config = None, None
    if train.deepspeed is not None:  # the engine replaces DDP and steps the optimizer; see deepspeed_engine.py
        engine, optimizer, ds_config = deepspeed_engine.initialize(
            core, optimizer, train.deepspeed, train.batch_size, world
        )
    best_model = model_state(recipe, core, ds_config)
    if checkpoint:
        state, best_model, saved = load_training_state(checkpoint, core, optimizer if engine is None else None)
        if engine is not None:
            with checkpoint.as_directory() as directory:
                deepspeed_engine.load_checkpoint(engine, Path(directory))

    model = engine if engine is not None else ray.train.torch.prepare_model(core)
    averaged = weight_average(core, train, saved)
    validated = averaged.module if averaged is not None else core  # the weights validated, kept and exported
    device = ray.train.torch.get_device()
    dataset = TensorDataset(*recipe.training_tensors(data))
    loader = epoch_loader(dataset, train, state["epoch"])
    steps_per_epoch, total_steps = len(loader), len(loader) * train.max_epochs
    generator = torch.Generator(device=device).manual_seed(train.seed + 7919 * rank)
    if saved is not None:
        restore_rng(saved, rank, world, generator)
        if rank == 0:
            progress(f"[{recipe.name}] resumed at epoch {state['epoch']} from checkpoint {checkpoint.path}")
    evaluator = Evaluator(data, "valid", eval_config)
    my_users = validation_users(data.num_users, train)[rank::world]
    metric = train.select_metric
    loop_started = time.perf_counter()

    def validate() -> dict[str, float]:
        """Full-split validation metrics of the weights that are kept (every worker ranks its share of users)."""
        validated.eval()
        with torch.no_grad():
            ranks = gather_ranks(evaluator.ranks(recipe.scorer(validated, data, "valid", device), my_users))
        return mean_metrics(ranks["full"], eval_config.ks)

    if train.validate_start and saved is None:  # the untrained weights compete for "best" (epoch -1)
        state.update(best=validate()[metric], best_epoch=-1)
        best_model = model_state(recipe, validated, ds_config)
        if rank == 0:
            progress(f"[{recipe.name}] before training: valid {metric} {state['best']:.4f}")

    # A resumed run continues only while the (possibly changed) stopping rule allows.
    # A diverged run stays stopped: its last weights are not finite.
    finished = state["bad_epochs"] >= train.patience or "diverged_epoch" in state
    last_epoch = state["epoch"] if finished else train.max_epochs
    for epoch in range(state["epoch"], last_epoch):
        if train.samples_per_epoch is not None and epoch > state["epoch"]:
            loader = epoch_loader(dataset, train, epoch)
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        lr_factors = None
        if train.lr_schedule != "constant":
            lr_factors = [lr_factor(epoch * steps_per_epoch + b, total_steps, train) for b in range(len(loader))]
        started = time.perf_counter()
        train_loss = train_one_epoch(
            recipe,
            model,
            core,
            loader,
            optimizer,
            generator,
            engine,
            averaged,
            lr_factors,
            progress_label=f"{recipe.name} epoch {epoch}" if rank == 0 else None,
            progress_every_s=train.progress_every_s,
        )
        train_seconds = time.perf_counter() - started
        valid = validate()
        # A non-finite loss means the weights are gone: this epoch is never the best, and training stops here.
        diverged = not math.isfinite(train_loss)
        if not diverged and valid[metric] > state["best"]:
            state.update(best=valid[metric], best_epoch=epoch, bad_epochs=0)
            best_model = model_state(recipe, validated, ds_config)
        else:
            state["bad_epochs"] += 1
        if diverged:
            state["diverged_epoch"] = epoch
        state["epoch"] = epoch + 1
        stop = diverged or state["bad_epochs"] >= train.patience or state["epoch"] >= train.max_epochs
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "epoch_train_s": train_seconds,
            **(last_lrs(optimizer) if lr_factors else {}),
            "elapsed_s": time.perf_counter() - loop_started,
            **{f"valid_{k}": v for k, v in valid.items() if k != "n"},
            f"best_valid_{metric}": state["best"],
            "best_epoch": state["best_epoch"],
            "stopped": stop,
            "diverged": diverged,
        }
        state["history"].append(metrics)
        if rank == 0:
            record_epoch(recipe.name, epoch, train.max_epochs, train_loss, valid, metric)
            progress(
                f"[{recipe.name}] epoch {epoch}: loss {train_loss:.4f}, valid {metric} {valid[metric]:.4f} "
                f"(best {state['best']:.4f} @ {state['best_epoch']}), {train_seconds:.1f} s"
                + (" — training diverged (non-finite loss): stopped; this epoch is never selected" if diverged else "")
            )
        rng_by_rank = gather_rng_states(generator)
        with tempfile.TemporaryDirectory() as directory:
            reported = None
            if engine is not None:  # every rank writes its ZeRO partition; Ray merges the ranks' folders
                deepspeed_engine.save_checkpoint(engine, Path(directory))
            if rank == 0:
                loop_state = {"state": state, "rng": torch.get_rng_state(), "rng_by_rank": rng_by_rank}
                if engine is None:
                    loop_state.update(model=model_state(recipe, core), optimizer=optimizer.state_dict())
                if averaged is not None:
                    loop_state["averaged_model"] = {
                        "model": model_state(recipe, averaged.module),
                        "n_averaged": averaged.n_averaged.clone(),
                    }
                torch.save(loop_state, Path(directory) / STATE_FILE)
                torch.save(best_model, Path(directory) / BEST_MODEL_FILE)
                if loop_config.get("stage_key") is not None:
                    (Path(directory) / KEY_FILE).write_text(json.dumps(loop_config["stage_key"]))
            if rank == 0 or engine is not None:
                reported = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=reported)
        if stop:
            break
