"""DeepSpeed inside the shared Ray Train loop: configuration, engine set-up on each worker, checkpoints.

A stage opts in with `train.deepspeed` (a shipped config name `zero2`/`zero3`, a JSON/YAML file, or an inline
mapping). The loop then calls `deepspeed.initialize` on the recipe's module instead of
`ray.train.torch.prepare_model`, steps through the engine, and saves DeepSpeed checkpoints with the frozen
parameters left out (the frozen LLM of A-LLMRec is never copied into a checkpoint).

On CPU (see shared notes/ray-stack.md): the accelerator is forced to `cpu`, the process group Ray Train set up
(gloo) is reused, and DeepSpeed's shared-memory all-reduce op — which JIT-compiles for ~2 minutes and 6 GiB on
first use — is skipped unless `shm_comm: true` is given in the config's `raylrec` section; gloo does the
all-reduce instead. Compiled ops are cached under `<raylrec cache>/torch_extensions`.
"""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from pathlib import Path

import torch
import yaml

from raylrec.errors import RaylrecError
from raylrec.paths import cache_dir

CHECKPOINT_DIR = "deepspeed"  # inside a Ray Train checkpoint
CHECKPOINT_TAG = "state"
SHIPPED = ("zero2", "zero3")


def load_deepspeed_config(spec: str | dict) -> dict:
    """The DeepSpeed config a `train.deepspeed` value names (before batch sizes are filled in)."""
    if isinstance(spec, dict):
        return copy.deepcopy(spec)
    if spec in SHIPPED:
        text = (resources.files("raylrec") / "presets" / "deepspeed" / f"{spec}.json").read_text()
        return json.loads(text)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise RaylrecError(f"train.deepspeed {spec!r} is neither a shipped config ({', '.join(SHIPPED)}) nor a file")
    try:
        loaded = yaml.safe_load(path.read_text())  # JSON is YAML
    except yaml.YAMLError as err:
        raise RaylrecError(f"{path}: not valid JSON/YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise RaylrecError(f"{path}: a DeepSpeed config must be a mapping")
    return loaded


def resolve_deepspeed_config(spec: str | dict, micro_batch_size: int, world_size: int) -> tuple[dict, dict]:
    """(DeepSpeed config with batch sizes matching the loop's loader, raylrec's own options).

    The loop's DataLoader yields `micro_batch_size` samples per worker and step; DeepSpeed is told the same,
    with its global batch = micro × accumulation × workers. The optimizer is the loop's torch optimizer
    (DeepSpeed's fused ones need compiled ops), hence `zero_allow_untested_optimizer`.
    """
    config = load_deepspeed_config(spec)
    options = config.pop("raylrec", {}) or {}
    if "optimizer" in config:
        raise RaylrecError(
            "the DeepSpeed config must not define an optimizer: the loop builds it from train.lr/"
            "train.optimizer (remove the `optimizer` section)"
        )
    accumulation = int(config.get("gradient_accumulation_steps", 1))
    config["train_micro_batch_size_per_gpu"] = micro_batch_size
    config["gradient_accumulation_steps"] = accumulation
    config["train_batch_size"] = micro_batch_size * accumulation * world_size
    config.setdefault("zero_allow_untested_optimizer", True)
    config.setdefault("steps_per_print", 10**9)
    return config, options


def zero_stage(config: dict) -> int:
    return int(config.get("zero_optimization", {}).get("stage", 0))


def prepare_environment(options: dict) -> None:
    """Process-level settings DeepSpeed reads when it is first imported or initialised."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed.ops

    if not options.get("shm_comm", False):
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def initialize(
    core: torch.nn.Module, optimizer: torch.optim.Optimizer, spec: str | dict, micro_batch_size: int, world_size: int
):
    """(engine, DeepSpeed's optimizer wrapper, resolved config) for `core` on this worker."""
    config, options = resolve_deepspeed_config(spec, micro_batch_size, world_size)
    prepare_environment(options)
    import deepspeed

    # Ray Train already initialised torch.distributed (gloo on CPU, nccl on GPU): DeepSpeed wraps that group.
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "gloo"
    deepspeed.init_distributed(dist_backend=backend)
    engine, ds_optimizer, _, _ = deepspeed.initialize(model=core, optimizer=optimizer, config=config)
    leave_out_tied_frozen_weights(engine)
    return engine, ds_optimizer, config


def leave_out_tied_frozen_weights(engine) -> None:
    """`save_checkpoint(exclude_frozen_parameters=True)` drops frozen parameters by their first name only, so a
    tied weight (an LLM's lm_head = its input embedding table) was still written under its other name. Drop
    frozen parameters under every name they have."""
    original = engine.module_state_dict

    def module_state_dict(*args, exclude_frozen_parameters: bool = False, **kwargs):
        state = original(*args, exclude_frozen_parameters=exclude_frozen_parameters, **kwargs)
        if exclude_frozen_parameters and state is not None:
            for name in frozen_names(engine.module):
                state.pop(name, None)
        return state

    engine.module_state_dict = module_state_dict


def trainable_state(core: torch.nn.Module, config: dict | None) -> dict[str, torch.Tensor]:
    """Full copies of the trainable parameters (and persistent buffers); a collective under ZeRO-3."""
    frozen = frozen_names(core)
    if config is not None and zero_stage(config) == 3:
        import deepspeed

        params = [p for p in core.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            return {k: v.detach().clone() for k, v in core.state_dict().items() if k not in frozen}
    return {k: v.detach().clone() for k, v in core.state_dict().items() if k not in frozen}


def frozen_names(core: torch.nn.Module) -> set[str]:
    """State-dict keys of parameters that do not train (tied weights under every name they have)."""
    return {name for name, p in core.named_parameters(remove_duplicate=False) if not p.requires_grad}


def save_checkpoint(engine, directory: Path) -> None:
    """Every rank writes its part (ZeRO partitions of the optimizer state); frozen parameters are left out."""
    engine.save_checkpoint(str(directory / CHECKPOINT_DIR), tag=CHECKPOINT_TAG, exclude_frozen_parameters=True)


def load_checkpoint(engine, directory: Path) -> None:
    path, _ = engine.load_checkpoint(str(directory / CHECKPOINT_DIR), tag=CHECKPOINT_TAG, load_module_strict=False)
    if path is None:
        raise RaylrecError(f"no DeepSpeed checkpoint under {directory / CHECKPOINT_DIR}")
