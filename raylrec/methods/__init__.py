"""The LLM-enhanced methods `raylrec train --method NAME` runs, by name.

Each entry takes (config preset or YAML file or None for its default, dotted overrides, cache root, force)
and returns the summaries of the stages it ran. Implementations are imported on call, so the CLI stays light.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from raylrec.config import print_config

MethodRunner = Callable[[str | None, dict, Path | None, bool], dict]


def train_pad(source: str | None, overrides: dict, cache_root: Path | None = None, force: bool = False) -> dict:
    from raylrec.config import load_config
    from raylrec.methods.pad.config import PadConfig
    from raylrec.methods.pad.pipeline import run_pad

    config = load_config(PadConfig, source or "pad", overrides)
    print_config("method pad", config)
    return run_pad(config, cache_root, force)


def train_idle(source: str | None, overrides: dict, cache_root: Path | None = None, force: bool = False) -> dict:
    from raylrec.config import load_config
    from raylrec.methods.idle.config import IdleConfig
    from raylrec.methods.idle.pipeline import run_idle

    config = load_config(IdleConfig, source or "idle", overrides)
    print_config("method idle", config)
    return run_idle(config, cache_root, force)


def train_allmrec(source: str | None, overrides: dict, cache_root: Path | None = None, force: bool = False) -> dict:
    from raylrec.config import load_config
    from raylrec.methods.allmrec.config import ALLMRecConfig
    from raylrec.methods.allmrec.pipeline import run_allmrec

    config = load_config(ALLMRecConfig, source or "allmrec", overrides)
    print_config("method allmrec", config)
    return run_allmrec(config, cache_root, force)


METHODS: dict[str, MethodRunner] = {"pad": train_pad, "idle": train_idle, "allmrec": train_allmrec}
