"""The data report: rows in and out of every preparation step, with every drop counted by reason."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from raylrec.errors import DataError


@dataclass
class StepRecord:
    step: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass
class DataReport:
    dataset: str
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    item_steps: list[StepRecord] = field(default_factory=list)  # rows of the items file, counted the same way

    def record(self, step: str, rows_in: int, rows_out: int, dropped: dict[str, int] | None = None) -> None:
        dropped = {reason: n for reason, n in (dropped or {}).items() if n}
        if rows_in - rows_out != sum(dropped.values()):
            raise AssertionError(f"step {step!r}: {rows_in - rows_out} rows lost but {dropped} accounted for")
        self.steps.append(StepRecord(step, rows_in, rows_out, dropped))
        if rows_out == 0:
            raise DataError(
                f"dataset {self.dataset!r} is empty after step {step!r} "
                f"({rows_in} rows in, dropped: {dropped}); relax the preparation settings"
            )

    def record_items(self, step: str, rows_in: int, rows_out: int, dropped: dict[str, int] | None = None) -> None:
        dropped = {reason: n for reason, n in (dropped or {}).items() if n}
        if rows_in - rows_out != sum(dropped.values()):
            raise AssertionError(f"item step {step!r}: {rows_in - rows_out} rows lost but {dropped} accounted for")
        self.item_steps.append(StepRecord(step, rows_in, rows_out, dropped))

    def write(self, path: Path, **extra) -> dict:
        body = {"dataset": self.dataset, "steps": [asdict(s) for s in self.steps], "notes": self.notes, **extra}
        if self.item_steps:
            body["item_steps"] = [asdict(s) for s in self.item_steps]
        path.write_text(json.dumps(body, indent=2))
        return body
