"""Typed configuration of an ID-model training stage."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raylrec.config import StrictModel
from raylrec.data.prepare import DataConfig
from raylrec.eval.evaluator import EvalConfig
from raylrec.models.base import ModelConfig
from raylrec.storage import DEFAULT_RUN_DIR


class TrainConfig(StrictModel):
    loss: Literal["ce", "bce"] = "ce"  # cross-entropy over all items, or BCE with one sampled negative per position
    # Cross-entropy only: the share of each target's probability spread evenly over all items (torch's
    # `label_smoothing`); 0 trains on the one-hot next item.
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    lr: float = 1e-3
    # constant: lr throughout. linear: a linear warm-up from 0 over the first `warmup_fraction` of all steps
    # (max_epochs × batches per epoch), then a linear decay to 0 at the last step (as transformers'
    # get_linear_schedule_with_warmup; early stopping may end the run before the decay does).
    lr_schedule: Literal["constant", "linear"] = "constant"
    warmup_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    weight_decay: float = 0.0
    optimizer: Literal["adam", "adamw"] = "adam"  # adam: L2 added to the gradient; adamw: decoupled weight decay
    batch_size: int = 256
    window_stride: int | None = None  # training windows end every this many items (default max_len: no overlap)
    max_epochs: int = 200
    # Train each epoch on this many samples instead of all: the next slice of a cycle through every training sample
    # in a seeded random order (a new order each cycle), so every sample is used once before any repeats.
    # None: every sample every epoch.
    samples_per_epoch: int | None = Field(default=None, ge=1)
    patience: int = 10  # epochs without a better validation metric before stopping
    # Inside an epoch, a progress line (batches done, mean loss so far) at most this often, from the first worker:
    # an LLM-backed epoch runs for minutes on a CPU (A-LLMRec's stage 2: 8 min on Scientific). None: per epoch only.
    progress_every_s: float | None = Field(default=60.0, ge=0.0)
    select_metric: str = "ndcg@10"  # full-ranking validation metric that picks the best epoch
    num_workers: int = 1  # Ray Train workers (DDP)
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1  # torch threads per worker: N workers must not oversubscribe the cores
    use_gpu: bool | Literal["auto"] = "auto"  # auto = use GPUs when the Ray cluster has any
    seed: int = 2020
    max_failures: int = 2  # worker failures survived by restoring the latest checkpoint
    # Validate, keep and export an exponential moving average of the weights (updated after every optimizer step)
    # instead of the raw weights; None: the raw weights. It smooths the step-to-step noise that picking the best
    # epoch on a small validation set otherwise amplifies.
    ema_decay: float | None = Field(default=None, gt=0.0, lt=1.0)
    # Validate the weights before the first step too, and keep them when no epoch beats them (best_epoch -1): for
    # stages that start from a model worth keeping (e.g. IDLE's head.id_residual starts as its ID model).
    validate_start: bool = False
    valid_users: int | None = None  # per-epoch validation on a fixed random sample of this many users (None: all)
    # DeepSpeed instead of DDP: a shipped config (zero2, zero3), a JSON/YAML file, or an inline mapping
    # (see raylrec/train/deepspeed_engine.py). None: plain DDP.
    deepspeed: str | dict | None = None

    @model_validator(mode="after")
    def ema_without_deepspeed(self) -> TrainConfig:
        if self.ema_decay is not None and self.deepspeed is not None:
            raise ValueError(
                "train.ema_decay keeps a whole copy of the module, which DeepSpeed's partitioned "
                "parameters do not allow; set only one of ema_decay and deepspeed"
            )
        return self

    @model_validator(mode="after")
    def warmup_needs_schedule(self) -> TrainConfig:
        if self.warmup_fraction and self.lr_schedule != "linear":
            raise ValueError("train.warmup_fraction is part of the linear schedule; it needs train.lr_schedule: linear")
        return self

    @model_validator(mode="after")
    def smoothing_needs_softmax(self) -> TrainConfig:
        if self.label_smoothing and self.loss != "ce":
            raise ValueError("train.label_smoothing smooths the softmax over all items; it needs train.loss: ce")
        return self


class StageConfig(StrictModel):
    """Everything `raylrec train` needs: where, which data, which model, how to train and evaluate."""

    run_dir: str = DEFAULT_RUN_DIR
    name: str | None = None  # artifact folder under models/; defaults to the model name
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def stride_fits_window(self) -> StageConfig:
        stride = self.train.window_stride
        if stride is not None and not 0 < stride <= self.model.max_len:
            raise ValueError(f"train.window_stride must be in 1..model.max_len ({self.model.max_len}), got {stride}")
        return self

    @property
    def stage_name(self) -> str:
        return self.name or self.model.name
