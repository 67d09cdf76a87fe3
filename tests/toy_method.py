"""A toy method, the one docs/extending.md walks through: item popularity (training interaction counts) as a
"method" with its own config and runner, registered with one `register_method` call. It trains nothing, so the
test that runs it through the registry takes a second; a real method's runner trains its recipes on the shared
Ray Train loop (raylrec/train/stage.py `run_stage`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from raylrec.config import StrictModel
from raylrec.data.prepare import DataConfig, ensure_prepared
from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import EvalConfig, Evaluator, write_metrics
from raylrec.eval.ranks import ranks_file
from raylrec.methods.registry import MethodSpec
from raylrec.storage import DEFAULT_RUN_DIR, RunLayout


class ToyPopularityConfig(StrictModel):
    """Item popularity, damped: score = count ** power (power > 0 keeps the order; it only shows an option)."""

    run_dir: str = DEFAULT_RUN_DIR
    name: str = Field("toy-popularity", description="the stage folder under models/ and the leaderboard row")
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    power: float = Field(1.0, gt=0, description="exponent on the training counts")


def run_toy_popularity(config: ToyPopularityConfig, cache_root: Path | None = None, force: bool = False) -> dict:
    """Score every user's candidates by item popularity, with the shared evaluator; write the metrics and ranks
    the leaderboard reads under models/<name>/."""
    data = PreparedData(ensure_prepared(config.data, config.run_dir, cache_root))
    scores = torch.from_numpy(data.item_train_counts().astype(np.float32) ** config.power)
    out = RunLayout(config.run_dir).model_dir(config.name)
    summary = {"stage": config.name, "trainable_params": 0}
    for split in ("valid", "test"):
        evaluator = Evaluator(data, split, config.eval)
        ranks = evaluator.ranks(lambda users: scores.unsqueeze(0).expand(len(users), -1))
        metrics = evaluator.summarize(ranks)
        write_metrics(
            out / f"metrics_{split}.json",
            model=config.name,
            split=split,
            metrics=metrics,
            config=config.model_dump(mode="json"),
            data=data,
            extra={"role": "method", "trainable_params": 0},
        )
        evaluator.write_ranks(ranks_file(out, split), ranks)
        summary[split] = {k: v for k, v in metrics["full"].items() if k != "n"}
    return {config.name: summary}


TOY = MethodSpec(
    name="toy-popularity",
    config_class=ToyPopularityConfig,
    default_preset="",  # none shipped: its config's defaults (the test hands a YAML file)
    runner=run_toy_popularity,
    description="toy: item popularity (docs/extending.md)",
    display_names={"toy-popularity": "Toy popularity"},
)
