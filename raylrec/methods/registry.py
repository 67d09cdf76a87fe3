"""The one registry of what raylrec trains: every LLM-enhanced method and ID backbone, by name.

In the spirit of peft's per-method registration (`register_peft_method`): each method package registers itself with
one `register_method(MethodSpec(...))` call in its `__init__.py`, and everything that needs to know the methods
reads this registry: the CLI's `--method`/`--model` choices and help, the Tune targets (raylrec/tune/targets.py),
the pipeline, and the leaderboard's display names and rules. Importing anything under `raylrec.methods` registers
them all (raylrec/methods/__init__.py imports each package).

Registration imports nothing heavy: configs, runners and Tune hooks are named as "module:attribute" strings and
imported on first use. Adding a method: docs/extending.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from raylrec.config import load_config, print_config
from raylrec.errors import RaylrecError


def resolve(reference: str | Callable) -> Any:
    """A "module:attribute" string → the attribute (imported now); a callable is returned as it is."""
    if not isinstance(reference, str):
        return reference
    module, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as err:
        raise RaylrecError(f"registry reference {reference!r} does not resolve: {err}") from err


def config_name(config: Any) -> str:
    """The default final stage: the stage named by the config's `name`."""
    return config.name


def prepare_data_only(config: Any, cache_root: Path | None) -> list[str]:
    """The default Tune prerequisite: every trial shares the prepared data only."""
    from raylrec.data.prepare import ensure_prepared

    ensure_prepared(config.data, config.run_dir, cache_root)
    return ["data"]


@dataclass(frozen=True)
class MethodSpec:
    """Everything raylrec needs to know about one trainable thing (a method or an ID backbone)."""

    name: str  # `raylrec train --method NAME`, `method: NAME` in a pipeline preset or sweep space
    config_class: str | type  # "module:Class" (or the class), a StrictModel with `run_dir`, `data`, `eval`
    default_preset: str  # raylrec/presets/<preset>.yaml ("": none, the config class's defaults)
    # "module:function" (config, cache_root, force) → the summaries of the stages it ran, into config.run_dir
    runner: str | Callable
    kind: Literal["method", "id_model"] = "method"
    description: str = ""  # one line, for the CLI's help
    presets: tuple[str, ...] = ()  # the shipped presets of this method (the CLI's help lists them)
    stages: tuple[str, ...] = ()  # stages `--stage` may pick (methods that run their stages one at a time)
    # config → the folder name under models/ of the stage whose validation metric selects a configuration (Tune)
    final_stage: str | Callable = "raylrec.methods.registry:config_name"
    # Leaderboard: stage name → row label, and stage-folder suffixes whose metrics are training-only (not a
    # comparable evaluation; e.g. A-LLMRec's stages that rank only the stored candidates)
    display_names: Mapping[str, str] = field(default_factory=dict)
    training_only_suffixes: tuple[str, ...] = ()
    # Tune: (config, cache_root) → run-dir-relative paths every trial links to (computed once, before the trials);
    # the config keys a space may not vary (they configure those shared artifacts); config → the one seed every
    # stage of a trial uses, so the best trial counts as the seed re-run at that seed (None: never reused)
    tune_prerequisites: str | Callable = "raylrec.methods.registry:prepare_data_only"
    tune_frozen_prefixes: tuple[str, ...] = ("data.", "eval.", "run_dir")
    seed_of_trial: str | Callable | None = None

    def load(self, preset: str | None, overrides: dict) -> Any:
        """The method's config from a preset or YAML file (default: its own preset) and nested overrides."""
        return load_config(resolve(self.config_class), preset or self.default_preset or None, overrides)

    def train(self, preset: str | None, overrides: dict, cache_root: Path | None = None, force: bool = False) -> Any:
        """Load, print and run: `raylrec train --method NAME` and the pipeline's method entries."""
        config = self.load(preset, overrides)
        print_config(f"{'method' if self.kind == 'method' else 'stage'} {self.name}", config)
        return self.run(config, cache_root, force)

    def run(self, config: Any, cache_root: Path | None, force: bool = False) -> Any:
        return resolve(self.runner)(config, cache_root, force)

    def stage_name(self, config: Any) -> str:
        return resolve(self.final_stage)(config)

    def trial_seed(self, config: Any) -> int | None:
        return None if self.seed_of_trial is None else resolve(self.seed_of_trial)(config)

    def prepare_shared(self, config: Any, cache_root: Path | None) -> list[str]:
        return resolve(self.tune_prerequisites)(config, cache_root)

    def check_space(self, keys: list[str]) -> None:
        frozen = [k for k in keys if any(k == p.rstrip(".") or k.startswith(p) for p in self.tune_frozen_prefixes)]
        if frozen:
            raise RaylrecError(
                f"a {self.name} sweep cannot vary {frozen}: those configure artifacts every trial "
                f"shares ({', '.join(self.tune_frozen_prefixes)})"
            )


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add a method (from its package's __init__.py); a second registration of one name is an error."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise RaylrecError(f"method {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a registration (tests that register a toy method clean up with it)."""
    _REGISTRY.pop(name, None)


def registered(kind: Literal["method", "id_model"] | None = None) -> dict[str, MethodSpec]:
    """The registered methods (or only one kind), by name in sorted order."""
    return {name: _REGISTRY[name] for name in sorted(_REGISTRY) if kind in (None, _REGISTRY[name].kind)}


def get_method(name: str, kind: Literal["method", "id_model"] | None = None) -> MethodSpec:
    found = registered(kind)
    if name not in found:
        raise RaylrecError(
            f"unknown {'method' if kind != 'id_model' else 'model'} {name!r} "
            f"(registered: {', '.join(found)}); a method registers itself in its package's "
            "__init__.py (docs/extending.md)"
        )
    return found[name]


def display_names() -> dict[str, str]:
    """Every registered stage name → its leaderboard label."""
    return {stage: label for spec in _REGISTRY.values() for stage, label in spec.display_names.items()}


def training_only_suffixes() -> tuple[str, ...]:
    return tuple(sorted({suffix for spec in _REGISTRY.values() for suffix in spec.training_only_suffixes}))
