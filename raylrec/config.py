"""Typed configuration: pydantic models loaded from YAML presets or files, with dotted overrides.

Every stage takes one of these models; the full resolved config is printed at the start of a run and
saved beside the artifacts it produced.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from raylrec.errors import RaylrecError

ConfigT = TypeVar("ConfigT", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def preset_path(name: str) -> Path:
    """A shipped preset by short name (e.g. `sasrec`), or the path itself if it is a file."""
    candidate = Path(name)
    if candidate.suffix in (".yaml", ".yml") and candidate.exists():
        return candidate
    shipped = resources.files("raylrec") / "presets" / f"{name}.yaml"
    if not shipped.is_file():
        available = sorted(
            p.name.removesuffix(".yaml")
            for p in (resources.files("raylrec") / "presets").iterdir()
            if p.name.endswith(".yaml") and not p.name.startswith("_")
        )
        raise RaylrecError(f"config {name!r} is neither a YAML file nor a preset; presets: {', '.join(available)}")
    return Path(str(shipped))


def set_dotted(tree: dict, dotted_key: str, value: Any) -> None:
    """Apply an override like `train.lr=0.01` to a nested dict."""
    *parents, leaf = dotted_key.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


DOTTED_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


def parse_overrides(pairs: list[str]) -> dict:
    """`["train.lr=0.01", "model.hidden_size=32"]` → nested dict; values parsed as YAML scalars."""
    tree: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise RaylrecError(f"override {pair!r} must look like key.sub=value")
        key, raw = (part.strip() for part in pair.split("=", 1))
        if not DOTTED_KEY.match(key):
            raise RaylrecError(f"override {pair!r}: {key!r} is not a dotted field name like train.lr")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise RaylrecError(f"override {pair!r}: the value is not valid YAML ({yaml_problem(err)})") from None
        try:
            set_dotted(tree, key, value)
        except (TypeError, AttributeError):
            raise RaylrecError(
                f"override {pair!r} conflicts with an earlier --set that gives {key.rsplit('.', 1)[0]!r} a plain value"
            ) from None
    return tree


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + " ".join(str(getattr(err, "problem", None) or err).split())


def deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_preset(source: str, seen: tuple[str, ...] = ()) -> dict:
    """A preset's or YAML file's settings, with what it inherits: `defaults:` lists presets (or files) merged
    first, in order, then the file's own keys over them. An entry `NAME@dotted.key` merges preset NAME under that
    key instead of at the top (a shared stage spec, e.g. `_sasrec-bce-short@backbone`)."""
    path = preset_path(source)
    if str(path) in seen:
        raise RaylrecError(f"{path}: `defaults` inherit in a circle ({' -> '.join([*seen, str(path)])})")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RaylrecError(f"{path}: not valid YAML ({yaml_problem(err)})") from None
    if not isinstance(tree, dict):
        raise RaylrecError(f"{path}: expected a mapping at the top level, got {type(tree).__name__}")
    parents = tree.pop("defaults", [])
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise RaylrecError(f"{path}: `defaults` must be a preset name or a list of them, got {parents!r}")
    merged: dict = {}
    for parent in parents:
        name, _, key = parent.partition("@")
        inherited = read_preset(name, (*seen, str(path)))
        if key:
            nested: dict = {}
            set_dotted(nested, key, inherited)
            inherited = nested
        merged = deep_merge(merged, inherited)
    return deep_merge(merged, tree)


def load_config(cls: type[ConfigT], source: str | Path | None = None, overrides: dict | None = None) -> ConfigT:
    """Build `cls` from a preset name or YAML file (with what it inherits, `read_preset`), then overrides; errors
    name the file and the field."""
    tree: dict = {}
    where = "defaults"
    if source is not None:
        where = str(preset_path(str(source)))
        tree = read_preset(str(source))
    tree = deep_merge(tree, overrides or {})
    try:
        config = cls.model_validate(tree)
    except ValidationError as err:
        raise RaylrecError(f"invalid {cls.__name__} in {where}: {validation_problems(err)}") from None
    check_select_metrics(config, where)
    return config


SELECT_METRIC = re.compile(r"^(hr|ndcg|mrr)@(\d+)$")


def check_select_metric(value: str, ks: list[int] | None, field: str, where: str = "config") -> None:
    """A model-selection metric must be one the evaluator computes: hr@K, ndcg@K or mrr@K with K in eval.ks."""
    match = SELECT_METRIC.match(value)
    if not match:
        raise RaylrecError(f"{where}: {field} {value!r} is not a validation metric; use hr@K, ndcg@K or mrr@K")
    if ks is not None and int(match.group(2)) not in ks:
        raise RaylrecError(
            f"{where}: {field} {value!r} needs {match.group(2)} in eval.ks (eval.ks is {ks}); add it "
            f"there or select on one of {', '.join(f'{match.group(1)}@{k}' for k in ks)}"
        )


def check_select_metrics(config: BaseModel, where: str = "config") -> None:
    """Every `select_metric` in a loaded config against its evaluation protocol (`eval.ks` at the top), so a typo
    fails at load time, not after a full epoch."""
    eval_config = getattr(config, "eval", None)
    ks = getattr(eval_config, "ks", None)

    def walk(node, path: str) -> None:
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                value = getattr(node, name)
                if name == "select_metric" and isinstance(value, str):
                    check_select_metric(value, ks, f"{path}{name}", where)
                else:
                    walk(value, f"{path}{name}.")
        elif isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                walk(item, f"{path}{index}.")

    walk(config, "")


def print_config(title: str, config: StrictModel) -> None:
    """A config in full, as YAML under a `# title` line: every run shows the settings it ran with."""
    print(f"# {title}\n{config.to_yaml()}", flush=True)


def validation_problems(err: ValidationError) -> str:
    """Every problem of a pydantic error as `dotted.field: message`, in one line."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())


def differing_settings(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """(dotted key, a's value, b's value) wherever two (nested or flat) config dicts differ, sorted by key."""
    a, b = flatten(a), flatten(b)
    return [(k, a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested config dict → dotted keys (the inverse of `raylrec.tune.space.nested`)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
