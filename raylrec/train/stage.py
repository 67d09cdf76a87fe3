"""Run one training stage as a Ray Train job and export what later stages consume.

Artifacts under the stage directory (`<run_dir>/models/<name>/` for ID models):
  stage_config.yaml            resolved config of this stage
  train/                       Ray Train storage (per-epoch checkpoints; a rerun resumes from the latest)
  model.safetensors            the best model's state (chosen on validation)
  metrics_valid.json, metrics_test.json, history.csv, DONE.json
  ranks_valid.parquet, ranks_test.parquet   per-user ranks (raylrec/eval/ranks.py), for paired comparisons
  + the recipe's own artifacts (for ID models: model_config.json, item_embeddings.safetensors,
    user_representations.safetensors — see raylrec/train/id_model.py)

A stage is keyed on its content, not its name (`StageKey`): its resolved settings (minus the run directory and
the settings that only place or pace the work), the prepared data's fingerprint and the record of every upstream
artifact it reads (an earlier stage's DONE.json, an embedding's meta.json). DONE.json and every checkpoint carry
the key. A finished stage is reused only when the key matches; a checkpoint is resumed only when it matches up
to the stopping rules (max_epochs, patience: continuing is then the same run, longer); any other mismatch is an
error naming the differences and the ways on (`--force`, a new run directory). `--force` moves the old stage
folder aside (`<name>.old-<time>`) and trains from scratch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import save_file

from raylrec.config import check_select_metric, differing_settings, flatten
from raylrec.data.prepare import ensure_prepared
from raylrec.data.prepared import PreparedData, check_readable
from raylrec.errors import ArtifactError, RaylrecError
from raylrec.eval.evaluator import EvalConfig, Evaluator, write_metrics
from raylrec.eval.ranks import ranks_file
from raylrec.ray_utils import cluster_has_gpus, ensure_ray
from raylrec.storage import RunLayout, RunStore, filesystem_of
from raylrec.train.config import StageConfig, TrainConfig
from raylrec.train.id_model import IDModelRecipe
from raylrec.train.loop import BEST_MODEL_FILE, KEY_FILE, STATE_FILE, load_model_state, train_loop_per_worker
from raylrec.train.recipe import Recipe
from raylrec.train.spec import StageSpec, resolve_stage
from raylrec.train.stage_context import apply_stage_context

log = logging.getLogger(__name__)
DONE_FILE = "DONE.json"
TRAIN_RUN_NAME = "train"
# Upstream artifacts a stage reads, by the record that changes whenever they are rewritten.
UPSTREAM_RECORDS = (DONE_FILE, "meta.json")
# Settings that place, pace or report the work without changing what is computed: never part of a stage's key.
PLACEMENT_FIELDS = ("cpus_per_worker", "threads_per_worker", "use_gpu", "max_failures", "progress_every_s")
# Settings that only say when to stop (wherever a training config sits in the key): a checkpoint written under
# other values is the same run, to be continued.
STOPPING_FIELDS = ("train.max_epochs", "train.patience")


def is_stopping_rule(dotted: str) -> bool:
    return dotted.endswith(STOPPING_FIELDS)


# Top-level keys of a recipe's config dump that the key covers otherwise: the folder (name, run_dir), the data.
COVERED_ELSEWHERE = ("run_dir", "name", "data")


@dataclass
class StageJob:
    """One stage to run: the recipe, how to train and evaluate it, and where its artifacts go."""

    recipe: Recipe
    train: TrainConfig
    eval: EvalConfig
    data_dir: Path
    run_dir: str  # the run directory's location; a URI one is synced through its mirror
    config_yaml: str

    @classmethod
    def of_method(cls, recipe: Recipe, train: TrainConfig, config, data_dir: str | Path) -> StageJob:
        """A method's stage: evaluated with the method config's `eval`, written to its `run_dir`, and recorded with
        the whole method config (`stage_config.yaml`), whichever of its stages it is."""
        return cls(
            recipe=recipe,
            train=train,
            eval=config.eval,
            data_dir=Path(data_dir),
            run_dir=config.run_dir,
            config_yaml=config.to_yaml(),
        )

    @cached_property
    def out(self) -> Path:
        """The stage's artifact folder: models/<recipe name> in the run directory (its mirror for a URI)."""
        return RunLayout(self.run_dir).model_dir(self.recipe.name)


def latest_checkpoint(
    train_location: str, required: tuple[str, ...] = (BEST_MODEL_FILE, STATE_FILE, KEY_FILE)
) -> Checkpoint | None:
    """The newest complete checkpoint (holding every `required` file) a previous run of this stage left (Ray names
    them by timestamp), wherever Ray Train's storage is (a local folder or an object store)."""
    import pyarrow.fs

    filesystem, path = filesystem_of(train_location)
    listing = filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    folders = sorted(
        info.path
        for info in listing
        if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    )
    complete = [
        folder
        for folder in folders
        if all(
            info.type == pyarrow.fs.FileType.File
            for info in filesystem.get_file_info([f"{folder}/{name}" for name in required])
        )
    ]
    return Checkpoint(path=complete[-1], filesystem=filesystem) if complete else None


@dataclass(frozen=True)
class StageKey:
    """What a stage's outputs are a function of (see the module docstring)."""

    settings: dict[str, Any]  # flattened, dotted keys
    inputs: dict[str, str] = field(default_factory=dict)  # run-dir-relative upstream folder → hash of its record
    data: str = ""  # the prepared data's fingerprint

    def digest(self, resumable: bool = False) -> str:
        """The fingerprint; `resumable`: without the stopping rules (what a checkpoint must match)."""
        kept = {k: v for k, v in self.settings.items() if not (resumable and is_stopping_rule(k))}
        text = json.dumps({"settings": kept, "inputs": self.inputs, "data": self.data}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def record(self) -> dict:
        return {
            "fingerprint": self.digest(),
            "resume_fingerprint": self.digest(resumable=True),
            "settings": self.settings,
            "inputs": self.inputs,
            "data": self.data,
        }

    def differences(self, saved: dict) -> list[str]:
        """What differs between this key and a saved record, in words."""
        found = [
            f"{k}: {there!r} there, {here!r} here"
            for k, there, here in differing_settings(saved.get("settings", {}), self.settings)
        ]
        found += [
            f"{name} {'changed since' if name in saved.get('inputs', {}) else 'not read'} then"
            for name, digest in sorted(self.inputs.items())
            if saved.get("inputs", {}).get(name) != digest
        ]
        found += [f"{name} read then, not now" for name in sorted(saved.get("inputs", {}).keys() - self.inputs.keys())]
        if saved.get("data") != self.data:
            found.append(f"prepared data fingerprint: {saved.get('data')} there, {self.data} here")
        return found


def portable(value: Any, root: Path) -> Any:
    """A config value with paths inside the run directory made relative to it (a copied or mirrored run directory
    keys the same)."""
    if isinstance(value, dict):
        return {k: portable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, root) for v in value]
    if isinstance(value, (str, Path)) and str(value).startswith(f"{root}/"):
        return "<run>/" + str(value)[len(str(root)) + 1 :]
    return value.as_posix() if isinstance(value, Path) else value


def upstream_inputs(folders: list[str | Path], root: Path) -> dict[str, str]:
    """Each upstream artifact folder inside the run directory → the sha256 of its record file (DONE.json of a
    stage, meta.json of an embedding), which changes whenever that artifact is rewritten."""
    found = {}
    for folder in folders:
        folder = Path(folder)
        if not str(folder).startswith(f"{root}/"):
            continue
        for name in UPSTREAM_RECORDS:
            if (folder / name).is_file():
                found[portable(str(folder), root)] = hashlib.sha256((folder / name).read_bytes()).hexdigest()[:16]
                break
    return found


def content_key(settings: dict, upstream: list[str | Path], data_dir: str | Path, run_dir: str | Path) -> StageKey:
    """The key of a step that computes `settings` from the prepared data and `upstream` artifact folders."""
    root = RunStore(str(run_dir)).root
    return StageKey(
        settings=flatten(portable(settings, root)),
        inputs=upstream_inputs(upstream, root),
        data=PreparedData(data_dir).fingerprint,
    )


def stage_key(job: StageJob) -> StageKey:
    """A training stage's key: its recipe's settings, training settings (minus placement) and evaluation protocol;
    the upstream folders are the paths the recipe holds (its backbone, an earlier stage, text embeddings)."""
    method = {k: v for k, v in job.recipe.config_dump().items() if k not in COVERED_ELSEWHERE}
    train = {k: v for k, v in job.train.model_dump(mode="json").items() if k not in PLACEMENT_FIELDS}
    if isinstance(method.get("train"), dict):  # a recipe config that nests its own training settings
        method["train"] = {k: v for k, v in method["train"].items() if k not in PLACEMENT_FIELDS}
    upstream = [v for v in vars(job.recipe).values() if isinstance(v, (str, Path))]
    return content_key(
        {
            "recipe": type(job.recipe).__name__,
            "method": method,
            "train": train,
            "eval": job.eval.model_dump(mode="json"),
        },
        upstream,
        job.data_dir,
        job.run_dir,
    )


def move_aside(out: Path, store: RunStore) -> Path | None:
    """Move a stage folder (and, for a mirrored run directory, its copy at the URI with Ray's checkpoints) to
    `<name>.old-<time>` next to it, so a forced rerun starts from nothing and the old run is kept; None when
    there was nothing to move."""
    import pyarrow.fs

    aside, moved = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"), False
    if store.mirrored:
        filesystem, source = filesystem_of(store.locate(out))
        _, destination = filesystem_of(store.locate(aside))
        if filesystem.get_file_info(source).type == pyarrow.fs.FileType.Directory:
            pyarrow.fs.copy_files(source, destination, source_filesystem=filesystem, destination_filesystem=filesystem)
            filesystem.delete_dir(source)
            moved = True
    if out.exists() or out.is_symlink():
        out.rename(aside)
        moved = True
    return aside if moved else None


def finished_stage(
    name: str, out: Path, key: StageKey, force: bool, store: RunStore, config_yaml: str | None = None
) -> dict | None:
    """The summary of `out` when it is finished with this key (reuse it); None when the step is to run — with
    `force`, after moving any earlier folder aside. A finished folder from other settings or inputs is an error."""
    done = out / DONE_FILE
    if force:
        aside = move_aside(out, store)
        if aside is not None:
            log.warning("--force: moved the earlier %s to %s; running %s from scratch", out, aside, name)
        return None
    if not done.exists():
        return None
    check_readable(done)
    summary = json.loads(done.read_text())
    saved = summary.get("stage_key")
    if saved is None:  # written before stages were keyed on content: compare the saved settings file instead
        differing = legacy_differences(out, config_yaml)
    else:
        differing = [] if saved.get("fingerprint") == key.digest() else key.differences(saved)
    if differing:
        raise ArtifactError(
            f"stage {name}: the finished stage at {out} was made from other settings or inputs than this run "
            f"asks for ({'; '.join(differing)}). Rerun with --force to retrain it from scratch (the old folder is "
            f"moved to {out.name}.old-<time>), or use a new run directory or another stage name"
        )
    log.info("stage %s already done with the same settings and inputs (%s); skipping", name, done)
    return summary


def legacy_differences(out: Path, config_yaml: str | None) -> list[str]:
    saved_file = out / "stage_config.yaml"
    if config_yaml is None or not saved_file.exists():
        return []
    saved, wanted = (yaml.safe_load(text) or {} for text in (saved_file.read_text(), config_yaml))
    # run_dir: the stage was found in it, whichever way the path is spelt (relative, absolute, file://)
    return [
        f"{k}: {there!r} there, {here!r} here" for k, there, here in differing_settings(saved, wanted) if k != "run_dir"
    ]


def checked_resume(name: str, train_location: str, key: StageKey) -> Checkpoint | None:
    """The newest checkpoint of an interrupted run of this stage, when it was written with the same settings (up
    to the stopping rules); a checkpoint from other settings is an error, never silently continued."""
    checkpoint = latest_checkpoint(train_location)
    if checkpoint is None:
        unkeyed = latest_checkpoint(train_location, required=(BEST_MODEL_FILE, STATE_FILE))
        if unkeyed is not None:
            raise ArtifactError(
                f"stage {name}: the checkpoint {unkeyed.path} has no {KEY_FILE} (written by an "
                "older raylrec), so it cannot be matched to these settings; rerun with --force to "
                "train from scratch (the old folder is moved aside)"
            )
        return None
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{KEY_FILE}") as stream:
            saved = json.loads(stream.read())
    except (OSError, ValueError):
        raise ArtifactError(
            f"stage {name}: {checkpoint.path}/{KEY_FILE} is unreadable, so the checkpoint cannot "
            "be matched to these settings; rerun with --force to train from scratch"
        ) from None
    if saved.get("resume_fingerprint") != key.digest(resumable=True):
        differing = [d for d in key.differences(saved) if not is_stopping_rule(d.split(":")[0])]
        raise ArtifactError(
            f"stage {name}: the unfinished run at {train_location} was started with other settings "
            f"or inputs ({'; '.join(differing)}); resuming it would mix the two. Rerun with --force "
            "to train from scratch (the old folder is moved aside), or use a new run directory"
        )
    return checkpoint


def run_stage(job: StageJob, force: bool = False) -> dict:
    """Train (or resume, or skip when already done with the same key) one stage; returns the stage summary."""
    out, done = job.out, job.out / DONE_FILE
    store = RunStore(job.run_dir)
    store.pull()  # a stage may read any earlier artifact of the run (backbones, text embeddings)
    # Fail fast, naming a bad or missing artifact, before anything is written; the key needs the data anyway.
    key = stage_key(job)  # the method's own settings: a Tune trial's seed or CPU share applies on top
    finished = finished_stage(job.recipe.name, out, key, force, store, job.config_yaml)
    if finished is not None:
        return finished
    job, callbacks = apply_stage_context(job)  # inside a Ray Tune trial: its reporting and CPU share
    check_select_metric(job.train.select_metric, job.eval.ks, "train.select_metric", f"stage {job.recipe.name}")
    storage = store.locate(out)  # Ray Train's storage: an object-store URI is written by Ray itself
    resume_from = checked_resume(job.recipe.name, f"{storage}/{TRAIN_RUN_NAME}", key)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stage_config.yaml").write_text(job.config_yaml)
    ensure_ray()
    if resume_from:
        log.info("resuming %s from %s", job.recipe.name, resume_from.path)
    use_gpu = cluster_has_gpus() if job.train.use_gpu == "auto" else job.train.use_gpu
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "recipe": job.recipe,
            "train": job.train,
            "eval": job.eval,
            "data_dir": str(job.data_dir),
            "run_dir": job.run_dir,
            "resume_from": resume_from,
            "stage_key": key.record(),
        },
        scaling_config=ScalingConfig(
            num_workers=job.train.num_workers, use_gpu=use_gpu, resources_per_worker={"CPU": job.train.cpus_per_worker}
        ),
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
        loop_state = torch.load(Path(directory) / STATE_FILE, weights_only=True)["state"]
    pd.DataFrame(loop_state["history"]).to_csv(out / "history.csv", index=False)
    diverged = check_divergence(job.recipe.name, loop_state, storage)
    summary = export_stage(job, PreparedData(job.data_dir), best_state)
    if diverged is not None:
        summary["diverged_at_epoch"] = diverged
    summary.update(
        fit_wall_s=round(wall, 1),
        final_metrics={k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
        stage_key=key.record(),
    )
    done.write_text(json.dumps(summary, indent=2))
    store.push(out)
    return summary


def check_divergence(name: str, loop_state: dict, storage: str) -> int | None:
    """The epoch at which training diverged (non-finite loss), or None. Diverging before any epoch validated is an
    error naming the stage and epoch; later, the stage keeps its best earlier epoch and records the divergence."""
    epoch = loop_state.get("diverged_epoch")
    if epoch is None:
        return None
    loss = loop_state["history"][-1]["train_loss"] if loop_state["history"] else float("nan")
    if loop_state["best_epoch"] < 0:
        raise RaylrecError(
            f"stage {name} diverged at epoch {epoch} (training loss {loss}) before any epoch "
            f"validated: no model to keep. Lower train.lr (or check the inputs), then rerun with "
            f"--force (its checkpoints: {storage}/{TRAIN_RUN_NAME})"
        )
    log.warning(
        "stage %s diverged at epoch %d (training loss %s): stopped there, keeping epoch %d (recorded as "
        "diverged_at_epoch in DONE.json)",
        name,
        epoch,
        loss,
        loop_state["best_epoch"],
    )
    return epoch


@torch.no_grad()
def export_stage(job: StageJob, data: PreparedData, state: dict) -> dict:
    """Save the best model and the recipe's artifacts, and evaluate it on validation and test."""
    core = job.recipe.build(data)
    load_model_state(core, state)  # a trainable-only state when the recipe does not save frozen parts
    core.eval()
    save_file({k: v.contiguous() for k, v in state.items()}, job.out / "model.safetensors")
    summary = {
        "stage": job.recipe.name,
        "trainable_params": sum(p.numel() for p in core.parameters() if p.requires_grad),
        **job.recipe.export(core, data, job.out),
    }
    config = {
        "method": job.recipe.config_dump(),
        "train": job.train.model_dump(mode="json"),
        "eval": job.eval.model_dump(mode="json"),
    }
    lineage = {"role": "id_model" if job.recipe.is_id_model else "method", "backbone": job.recipe.backbone_stage()}
    for split in job.recipe.export_splits:
        evaluator = Evaluator(data, split, job.eval)
        ranks = evaluator.ranks(job.recipe.scorer(core, data, split, torch.device("cpu")))
        evaluator.write_ranks(ranks_file(job.out, split), ranks)
        metrics = evaluator.summarize(ranks)
        write_metrics(
            job.out / f"metrics_{split}.json",
            model=job.recipe.name,
            split=split,
            metrics=metrics,
            config=config,
            data=data,
            extra={"trainable_params": summary["trainable_params"], **lineage},
        )
        summary[split] = {k: v for k, v in metrics["full"].items() if k != "n"}
    return summary


def stage_dir(config: StageConfig) -> Path:
    return RunLayout(config.run_dir).model_dir(config.stage_name)


def run_training_stage(config: StageConfig, data_dir: Path, force: bool = False) -> dict:
    """Train one ID backbone (SASRec, GRU4Rec, …) as configured."""
    job = StageJob(
        recipe=IDModelRecipe(config),
        train=config.train,
        eval=config.eval,
        data_dir=Path(data_dir),
        run_dir=config.run_dir,
        config_yaml=config.to_yaml(),
    )
    return run_stage(job, force=force)


def run_id_stage(config: StageConfig, cache_root: Path | None = None, force: bool = False) -> dict:
    """Prepare the data into the stage's run directory (once) and train the stage: the ID backbones' runner."""
    return run_training_stage(config, ensure_prepared(config.data, config.run_dir, cache_root), force)


def prepare_backbone(config: Any, spec: StageSpec, cache_root: Path | None) -> list[str]:
    """Prepare a method's data and train the frozen ID backbone it reads, once, before a sweep's trials: the
    run-dir-relative folders every trial then shares."""
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    backbone = resolve_stage(spec, config.run_dir, config.data, config.eval)
    run_training_stage(backbone, data_dir)
    return ["data", f"models/{backbone.stage_name}"]
