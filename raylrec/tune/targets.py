"""What a sweep can tune: one `TuneTarget` per method, by the name a space file's `method:` gives.

A target knows how to build the method's config from a preset plus overrides, which stage is the one
being selected (its per-epoch validation metric drives ASHA, its metrics_valid.json the selection, its
metrics_test.json the seed re-runs), how to run the method into a run directory, and which artifacts
every trial may share instead of recomputing (the prepared data; for PAD also the phase-1 backbone and
the item text embeddings, which the space must then leave alone).

Adding a method that `raylrec train --method` runs (raylrec/methods/__init__.py) is one line in TARGETS:
    "newmethod": TuneTarget("newmethod", "raylrec.methods.newmethod.config:NewConfig", "newmethod"),
By default a trial runs `METHODS[name]`, shares only the prepared data, and selects the stage named by the
config's `name`; give `prerequisites` to share more (a frozen backbone, text embeddings).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raylrec.config import load_config
from raylrec.errors import RaylrecError


def _resolve(reference: str | Callable) -> Any:
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class TuneTarget:
    name: str
    config_class: str  # "module:Class"
    default_preset: str
    # config → the selected stage's folder name under models/
    final_stage: Callable[[Any], str] | str = "raylrec.tune.targets:config_name"
    # (config, cache_root) → run the method into config.run_dir; default: METHODS[name]
    runner: Callable[[Any, Path | None], Any] | str | None = None
    # (config, cache_root) → run-dir-relative paths every trial links to (computed once, before the trials)
    prerequisites: Callable[[Any, Path | None], list[str]] | str = "raylrec.tune.targets:prepare_data_only"
    frozen_prefixes: tuple[str, ...] = field(default=("data.", "eval.", "run_dir"))  # keys a space may not vary
    # config → the one seed every stage a trial trains uses, so the best trial counts as the seed re-run at that
    # seed; None (or a target without it): never reused, every seed is re-run
    seed_of_trial: Callable[[Any], int | None] | str | None = None

    def load(self, preset: str | None, overrides: dict) -> Any:
        return load_config(_resolve(self.config_class), preset or self.default_preset, overrides)

    def stage_name(self, config: Any) -> str:
        return _resolve(self.final_stage)(config)

    def run(self, config: Any, cache_root: Path | None) -> Any:
        if self.runner is None:
            from raylrec.methods import METHODS

            if self.name not in METHODS:
                raise RaylrecError(f"method {self.name} has no runner in raylrec.methods.METHODS")
            import tempfile

            # The method runners take a preset or file; hand them the resolved config as a YAML file.
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
                handle.write(config.to_yaml())
            try:
                return METHODS[self.name](handle.name, {}, cache_root, False)
            finally:
                Path(handle.name).unlink(missing_ok=True)
        return _resolve(self.runner)(config, cache_root)

    def trial_seed(self, config: Any) -> int | None:
        return None if self.seed_of_trial is None else _resolve(self.seed_of_trial)(config)

    def prepare_shared(self, config: Any, cache_root: Path | None) -> list[str]:
        return _resolve(self.prerequisites)(config, cache_root)

    def check_space(self, keys: list[str]) -> None:
        frozen = [k for k in keys if any(k == p.rstrip(".") or k.startswith(p) for p in self.frozen_prefixes)]
        if frozen:
            raise RaylrecError(f"a {self.name} sweep cannot vary {frozen}: those configure artifacts every trial "
                               f"shares ({', '.join(self.frozen_prefixes)})")


def config_name(config: Any) -> str:
    return config.name


def id_stage_name(config: Any) -> str:
    return config.stage_name


def id_stage_seed(config: Any) -> int:
    return config.train.seed


def prepare_data_only(config: Any, cache_root: Path | None) -> list[str]:
    from raylrec.pipeline import ensure_prepared

    ensure_prepared(config.data, config.run_dir, cache_root)
    return ["data"]


def run_id_stage(config: Any, cache_root: Path | None) -> dict:
    from raylrec.pipeline import ensure_prepared
    from raylrec.train.stage import run_training_stage

    return run_training_stage(config, ensure_prepared(config.data, config.run_dir, cache_root))


def pad_prerequisites(config: Any, cache_root: Path | None) -> list[str]:
    """PAD's phase 1 (the pre-trained backbone) and the item text embeddings, computed once for all trials."""
    from raylrec.methods.pad.pipeline import pretrain_stage
    from raylrec.pipeline import ensure_prepared
    from raylrec.text.encode import encode_items
    from raylrec.train.stage import run_training_stage

    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    pretrain = pretrain_stage(config)
    run_training_stage(pretrain, data_dir)
    encode_items(config.text, data_dir, config.run_dir, cache_root)
    return ["data", f"models/{pretrain.stage_name}", "embeddings"]


def backbone_prerequisites(spec_field: str):
    """(config, cache_root) → prepare the data and train the frozen ID backbone the method reads, once."""
    def prepare(config: Any, cache_root: Path | None) -> list[str]:
        from raylrec.pipeline import ensure_prepared, resolve_stage
        from raylrec.train.stage import run_training_stage

        data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
        backbone = resolve_stage(getattr(config, spec_field), config.run_dir, config.data, config.eval)
        run_training_stage(backbone, data_dir)
        return ["data", f"models/{backbone.stage_name}"]

    return prepare


def idle_prerequisites(config: Any, cache_root: Path | None) -> list[str]:
    return backbone_prerequisites("id_model")(config, cache_root)


def allmrec_prerequisites(config: Any, cache_root: Path | None) -> list[str]:
    return backbone_prerequisites("backbone")(config, cache_root)


def allmrec_stage2(config: Any) -> str:
    return config.stage2_name


def id_target(name: str) -> TuneTarget:
    return TuneTarget(name, "raylrec.train.config:StageConfig", name, final_stage=id_stage_name,
                      runner=run_id_stage, seed_of_trial=id_stage_seed)


TARGETS: dict[str, TuneTarget] = {
    "sasrec": id_target("sasrec"),
    "gru4rec": id_target("gru4rec"),
    "pad": TuneTarget("pad", "raylrec.methods.pad.config:PadConfig", "pad", prerequisites=pad_prerequisites,
                      runner="raylrec.methods.pad.pipeline:run_pad",
                      frozen_prefixes=("data.", "eval.", "run_dir", "pretrain.", "text.", "baselines")),
    "idle": TuneTarget("idle", "raylrec.methods.idle.config:IdleConfig", "idle", prerequisites=idle_prerequisites,
                       runner="raylrec.methods.idle.pipeline:run_idle",
                       frozen_prefixes=("data.", "eval.", "run_dir", "id_model.")),
    # Selected on stage 2 (its per-epoch validation ranks the stored candidates by LLM likelihood).
    "allmrec": TuneTarget("allmrec", "raylrec.methods.allmrec.config:ALLMRecConfig", "allmrec",
                          final_stage=allmrec_stage2, prerequisites=allmrec_prerequisites,
                          runner="raylrec.methods.allmrec.pipeline:run_allmrec",
                          frozen_prefixes=("data.", "eval.", "run_dir", "backbone.")),
}


def get_target(method: str) -> TuneTarget:
    if method not in TARGETS:
        raise RaylrecError(f"no sweep target for method {method!r} yet (implemented: {', '.join(sorted(TARGETS))}); "
                           "register it in raylrec/tune/targets.py TARGETS")
    return TARGETS[method]
