"""IDLE-Adapter benchmark on MovieLens-100k: the frozen ID backbone alone vs IDLE-Adapter on it (the paper's
Table 3 question) with each item-head option (docs/idle.md), with `minilm` (encoder) and `smollm2-135m`
(decoder, on the preset's head), the three ablations of Table 4 (w/o LayerWise, w/o Refinement, w/o Distribution)
and our two training extensions switched off (newest-4 sub-sequences; constant lr). Test HR@5/10 and NDCG@5/10
with full ranking (history masked), the stage's wall time and trainable parameters, then per variant the paired
bootstrap 95 % interval of its NDCG@10 minus the ID model's (over all test users and over the users whose target
is in the two rarest equal-mass frequency buckets, raylrec/eval/compare.py) and NDCG@10 in each of the 10 buckets.

    python bench/idle.py                                   # every variant, on the CPU preset `idle`
    python bench/idle.py --variants preset paper-head      # a subset
    python bench/idle.py --set train.samples_per_epoch=2000 # reduce every variant further

All variants share one run directory (default: runs/idle-bench), so the ID backbone trains once and the
`preset` variant is the preset's own stage; finished variants are reused (their recorded wall times are printed):
use a new run directory to re-measure. The decoder variant is much slower per token than minilm on CPU;
`--decoder-set` reduces only it (default: 1000 samples an epoch, 1 epoch, per-epoch validation on 200 users; the
final valid/test metrics always use every user). Every choice is made on validation: the bench prints validation
NDCG@10 next to test.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from raylrec.config import deep_merge, load_config, parse_overrides
from raylrec.data.prepare import ensure_prepared
from raylrec.data.prepared import PreparedData
from raylrec.eval.compare import RAREST, Comparison, compare_frames, user_values
from raylrec.eval.evaluator import Evaluator
from raylrec.eval.ranks import ranks_file, read_ranks
from raylrec.methods.idle.config import IdleConfig
from raylrec.methods.idle.pipeline import run_idle
from raylrec.storage import RunLayout
from raylrec.train.id_model import load_stage_model, sequence_scorer

PAPER_HEAD = {"head": {"init": "random", "id_residual": False}, "loss_excludes_history": False}
VARIANTS: dict[str, tuple[str, dict]] = {
    "preset": ("IDLE, minilm, the preset", {}),
    "paper-head": ("minilm, head random, plain loss (paper)", PAPER_HEAD),
    "id_tied": ("minilm, head id_tied", {"head": {"init": "id_tied", "id_residual": False}}),
    "text": ("minilm, head text", {"head": {"init": "text", "id_residual": False}}),
    "residual-random": ("minilm, head random + id_residual", {"head": {"init": "random", "id_residual": True}}),
    "residual-id_tied": ("minilm, head id_tied + id_residual", {"head": {"init": "id_tied", "id_residual": True}}),
    "residual-text": ("minilm, head text + id_residual", {"head": {"init": "text", "id_residual": True}}),
    "unmasked-loss": ("preset, plain loss (history not masked)", {"loss_excludes_history": False}),
    "smollm2": ("smollm2-135m, the preset's head", {"backbone": "smollm2-135m"}),
    "no-layerwise": ("preset w/o LayerWise", {"adapter": {"layerwise": False}}),
    "no-refinement": ("preset w/o Refinement", {"adapter": {"refinement": False}}),
    "no-distribution": ("preset w/o Distribution", {"mmd": {"weight": 0.0}}),
    "newest-4": (
        "preset on the 4 newest prefixes per user",
        {"subsequences_per_user": 4, "train": {"samples_per_epoch": None}},
    ),
    "constant-lr": ("preset, constant lr", {"train": {"lr_schedule": "constant", "warmup_fraction": 0.0}}),
}
DECODER_DEFAULTS = ["train.samples_per_epoch=1000", "train.max_epochs=1", "train.valid_users=200"]
COLUMNS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")
METRIC = "ndcg@10"


def id_model_ranks(stage_dir: Path, data: PreparedData, config: IdleConfig, split: str) -> Path:
    """The frozen ID model's stored per-user ranks; computed once from its saved model when its stage predates
    stored ranks (same evaluator, same users)."""
    path = ranks_file(stage_dir, split)
    if not path.exists():
        model = load_stage_model(stage_dir)
        evaluator = Evaluator(data, split, config.eval)
        with torch.no_grad():
            ranks = evaluator.ranks(sequence_scorer(model, data, split, torch.device("cpu")))
        evaluator.write_ranks(path, ranks)
    return path


def metrics_of(stage_dir: Path, split: str) -> dict:
    return json.loads((stage_dir / f"metrics_{split}.json").read_text())["metrics"]["full"]


def row(label: str, stage_dir: Path, summary: dict, comparison: Comparison | None) -> str:
    test, valid = metrics_of(stage_dir, "test"), metrics_of(stage_dir, "valid")
    versus = "| – | –" if comparison is None else f"| {comparison.overall} | {comparison.rarest}"
    return (
        f"| {label} | "
        + " | ".join(f"{test[c]:.4f}" for c in COLUMNS)
        + f" | {valid[METRIC]:.4f} {versus}"
        + f" | {summary.get('fit_wall_s', '?')} | {summary.get('trainable_params', 0):,} |"
    )


def bucket_row(label: str, frame) -> str:
    """NDCG@10 per equal-mass frequency bucket (0 = rarest) from stored ranks."""
    values = user_values(frame, METRIC)
    means = values.groupby("frequency_bucket")["value"].mean()
    return f"| {label} | " + " | ".join(f"{means.get(b, np.nan):.4f}" for b in range(len(means))) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="idle", help="IDLE preset or YAML file (the base of every variant)")
    parser.add_argument("--run-dir", default="runs/idle-bench")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    parser.add_argument(
        "--decoder-set",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help=f"extra overrides for decoder variants (default: {' '.join(DECODER_DEFAULTS)})",
    )
    args = parser.parse_args()
    base = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    decoder = parse_overrides(DECODER_DEFAULTS if args.decoder_set is None else args.decoder_set)
    results, timings, id_summary, config = [], {}, None, None
    for key in args.variants:
        label, switches = VARIANTS[key]
        # The preset variant is the preset itself (its stage is shared with `raylrec train --method idle`).
        overrides = (
            deep_merge(base, switches)
            if key == "preset"
            else deep_merge(deep_merge(base, switches), {"name": f"idle-{key}"})
        )
        if switches.get("backbone", "minilm") != "minilm":
            overrides = deep_merge(overrides, decoder)
        config = load_config(IdleConfig, args.config, overrides)
        print(f"\n# variant {key}\n{config.to_yaml()}", flush=True)
        started, load_before = time.perf_counter(), os.getloadavg()[1]
        summaries = run_idle(config)
        timings[key] = (time.perf_counter() - started, load_before, os.getloadavg()[1])
        id_summary = summaries["id_model"]
        results.append((label, RunLayout(config.run_dir).model_dir(config.name), summaries["idle"]))

    layout = RunLayout(config.run_dir)
    data = PreparedData(ensure_prepared(config.data, config.run_dir))
    id_dir = layout.model_dir(config.id_model.name)
    id_frame = read_ranks(id_model_ranks(id_dir, data, config, "test"))
    buckets = config.eval.frequency_buckets
    lines, bucket_lines = [], [bucket_row(f"{config.id_model.name} alone", id_frame)]
    for label, stage_dir, summary in results:
        frame = read_ranks(ranks_file(stage_dir, "test"))
        comparison = compare_frames(frame, id_frame, METRIC, num_buckets=buckets)
        lines.append(row(label, stage_dir, summary, comparison))
        bucket_lines.append(bucket_row(label, frame))
        print(
            f"{label}: test {METRIC} − ID model's, per bucket: "
            + ", ".join(f"{b}: {d}" for b, d in comparison.buckets.items()),
            flush=True,
        )
    rare_users = int((id_frame["frequency_bucket"] < RAREST).sum())
    table = "\n".join(
        [
            f"## Test, full ranking over all items ({config.data.dataset}, history masked)\n",
            f"Δ = this row's test {METRIC} minus the frozen ID model's, paired bootstrap 95 % interval over "
            f"{len(id_frame)} test users; rarest = the users whose target is in the {RAREST} rarest of {buckets} "
            f"equal-mass frequency buckets ({rare_users} users).\n",
            f"| model | HR@5 | HR@10 | NDCG@5 | NDCG@10 | valid {METRIC} | Δ {METRIC} | Δ {METRIC} rarest "
            "| stage wall s | trainable params |",
            "|---|---|---|---|---|---|---|---|---|---|",
            row(f"{config.id_model.name} alone (the frozen ID model)", id_dir, id_summary, None),
            *lines,
            f"\n### Test {METRIC} per equal-mass frequency bucket of the target (0 = rarest)\n",
            "| model | " + " | ".join(str(b) for b in range(buckets)) + " |",
            "|---|" + "---|" * buckets,
            *bucket_lines,
            "\nbench wall s per variant (incl. export evaluation; a reused stage ≈ 0) [5-min load "
            f"average before → after, {os.cpu_count()} cores]: "
            + ", ".join(f"{k} {v[0]:.0f} [{v[1]:.0f} → {v[2]:.0f}]" for k, v in timings.items()),
        ]
    )
    print("\n" + table)
    (layout.root / "bench_idle.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
