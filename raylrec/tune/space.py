"""Search spaces as data: `tune_spaces/<method>.yaml` → a validated `SweepSpec` → Ray Tune domains.

A space file names the method, its base config (a preset or YAML file), the validation metric, the
search algorithm and scheduler, fixed overrides, and one domain per dotted config key:

    method: sasrec
    preset: sasrec
    metric: valid_ndcg@10          # reported every epoch by the training loop; selection uses validation only
    search: grid                   # grid | random | optuna | hyperopt
    fixed: {train.max_epochs: 60}  # applied to every trial
    space:
      train.lr: {grid: [0.0005, 0.001, 0.002]}
      model.dropout: {grid: [0.2, 0.5]}
      model.hidden_size: {choice: [32, 64]}
      train.weight_decay: {loguniform: [1.0e-6, 1.0e-3]}

Domains: `grid` (every value; under `random`/`optuna`/`hyperopt` search it becomes `choice`), `choice`,
`uniform`, `loguniform`, `quniform` [low, high, q], `randint` [low, high) and `qrandint` [low, high, q].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from raylrec.config import StrictModel, set_dotted
from raylrec.errors import RaylrecError

DOMAIN_KINDS = ("grid", "choice", "uniform", "loguniform", "quniform", "randint", "qrandint")
SearchKind = Literal["grid", "random", "optuna", "hyperopt"]


class SchedulerSpec(StrictModel):
    """ASHA on the validation metric, one rung step per reported epoch (`training_iteration`)."""

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(3, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(2.0, gt=1)
    max_t: int = Field(1000, ge=1)  # an upper bound on reports per trial (epochs + the final report)


class SweepSpec(StrictModel):
    method: str
    preset: str | None = None  # base config: preset name or YAML file (default: the method's own preset)
    description: str = ""
    metric: str = "valid_ndcg@10"
    mode: Literal["max", "min"] = "max"
    search: SearchKind = "grid"
    num_samples: int = Field(1, ge=1)  # grid: repeats of the whole grid; otherwise: number of trials
    seeds: int = Field(3, ge=0)  # the best config is re-run with this many seeds and evaluated on test
    seed_base: int = 2020
    scheduler: SchedulerSpec = SchedulerSpec()
    max_concurrent_trials: int | None = Field(None, ge=1)  # None: from the cluster's CPUs/GPUs
    trial_cpus: float = Field(0.5, gt=0)  # CPUs per Ray Train worker inside a trial
    fixed: dict[str, Any] = Field(default_factory=dict)  # dotted key → value, every trial
    space: dict[str, dict[str, Any]] = Field(min_length=1)
    notes: dict[str, str] = Field(default_factory=dict)  # dotted key → where its values come from

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, metric: str) -> str:
        if not metric.startswith("valid_"):
            raise ValueError(f"sweeps select on validation only: the metric must be a valid_* metric, got {metric!r}")
        return metric

    @field_validator("space")
    @classmethod
    def _domains(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, domain in space.items():
            if not isinstance(domain, dict) or len(domain) != 1 or next(iter(domain)) not in DOMAIN_KINDS:
                raise ValueError(f"space.{key}: give exactly one of {', '.join(DOMAIN_KINDS)}, got {domain!r}")
            kind, args = next(iter(domain.items()))
            if not isinstance(args, list) or not args:
                raise ValueError(f"space.{key}.{kind}: expected a non-empty list, got {args!r}")
            needs = {"uniform": 2, "loguniform": 2, "randint": 2, "quniform": 3, "qrandint": 3}.get(kind)
            if needs and len(args) != needs:
                raise ValueError(f"space.{key}.{kind}: expected {needs} numbers, got {args!r}")
        return space

    @model_validator(mode="after")
    def _fixed_and_space_disjoint(self) -> SweepSpec:
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise ValueError(f"keys both fixed and searched: {both}")
        return self

    @property
    def metric_key(self) -> str:
        """The metric's name in the evaluator's full-ranking results (`valid_ndcg@10` → `ndcg@10`)."""
        return self.metric.removeprefix("valid_")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def load_space(path: str | Path, overrides: dict | None = None) -> SweepSpec:
    from raylrec.config import deep_merge

    path = Path(path)
    if not path.exists():
        shipped = Path(__file__).resolve().parents[2] / "tune_spaces" / f"{path.name.removesuffix('.yaml')}.yaml"
        if not shipped.exists():
            raise RaylrecError(f"search space {path} not found")
        path = shipped
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise RaylrecError(f"{path}: not valid YAML: {err}") from err
    tree = deep_merge(tree, overrides or {})
    try:
        return SweepSpec.model_validate(tree)
    except Exception as err:  # pydantic's message names the field
        raise RaylrecError(f"invalid search space {path}: {err}") from err


def tune_domain(domain: dict[str, Any], search: SearchKind):
    """One space entry as a Ray Tune domain."""
    from ray import tune

    kind, args = next(iter(domain.items()))
    if kind == "grid":
        return tune.grid_search(list(args)) if search == "grid" else tune.choice(list(args))
    if kind == "choice":
        return tune.choice(list(args))
    return {
        "uniform": tune.uniform,
        "loguniform": tune.loguniform,
        "quniform": tune.quniform,
        "randint": tune.randint,
        "qrandint": tune.qrandint,
    }[kind](*args)


def param_space(spec: SweepSpec, search: SearchKind | None = None) -> dict:
    """The nested Tune param space of a spec's searched keys (dotted keys become nested dicts)."""
    tree: dict = {}
    for key, domain in spec.space.items():
        set_dotted(tree, key, tune_domain(domain, search or spec.search))
    return tree


def nested(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        set_dotted(tree, key, value)
    return tree


def grid_size(spec: SweepSpec) -> int:
    size = 1
    for domain in spec.space.values():
        kind, args = next(iter(domain.items()))
        if kind == "grid":
            size *= len(args)
    return size
