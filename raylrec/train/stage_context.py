"""Settings a caller imposes on every training stage started inside a `with stage_context(...)` block.

A Ray Tune trial runs a whole method (one or several `run_stage` calls, e.g. PAD's phases) without
the method knowing it is tuned. The trial wraps that call in a stage context, and `run_stage` picks up:

  callbacks       Ray Train `UserCallback`s added to the stage's `RunConfig` (Tune's `TuneReportCallback`)
  report_stages   the stage names that get those callbacks (None = every stage)
  train_updates   `TrainConfig` fields forced on every stage (a trial's CPU share, the seed of a seed re-run)

Outside such a block nothing changes. The context is a `ContextVar`, so it is local to the calling thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageContext:
    callbacks: list = field(default_factory=list)
    report_stages: set[str] | None = None
    train_updates: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[StageContext | None] = ContextVar("raylrec_stage_context", default=None)


@contextmanager
def stage_context(context: StageContext) -> Iterator[StageContext]:
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def current_stage_context() -> StageContext | None:
    return _current.get()


def apply_stage_context(job):
    """(job with the context's train updates, the callbacks its Ray Train run gets) for a `StageJob`."""
    context = _current.get()
    if context is None:
        return job, []
    if context.train_updates:
        job = dataclasses.replace(job, train=job.train.model_copy(update=context.train_updates))
    reports = context.report_stages is None or job.recipe.name in context.report_stages
    return job, list(context.callbacks) if reports else []
