"""Foundation benchmark on MovieLens-100k against RecBole 1.2.1 (numbers in ../shared/notes/peer-recbole.md).

Protocol as the peer: leave-one-out by time, full ranking, no filtering, validation NDCG@10 picks the
checkpoint, history masking OFF (RecBole's sequential default); our numbers with masking ON are shown too.

    python bench/foundation.py --run-dir runs/bench            # SASRec + GRU4Rec, then 1 vs 2 workers
    python bench/foundation.py --run-dir runs/bench --skip-scaling
    python bench/foundation.py --run-dir runs/bench --skip-scaling --models sasrec --seeds 2020 2021 2022

Prints Markdown tables. Wall times include Ray start-up of each stage.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from raylrec.config import load_config
from raylrec.data.prepare import ensure_prepared
from raylrec.data.prepared import PreparedData
from raylrec.eval.evaluator import EvalConfig, Evaluator
from raylrec.eval.metrics import mean_interval, mean_metrics, per_user_metrics
from raylrec.train.config import StageConfig
from raylrec.train.id_model import load_stage_model, sequence_scorer
from raylrec.train.stage import run_training_stage, stage_dir

# RecBole 1.2.1 on this machine kind (../shared/notes/peer-recbole.md): test metrics, best validation
# NDCG@10, and seconds to its best epoch.
PEER = {
    "sasrec": {
        "hr@10": 0.1357,
        "ndcg@10": 0.0639,
        "hr@20": 0.2386,
        "ndcg@20": 0.0898,
        "best_valid": 0.0705,
        "seconds_to_best": 2800,
    },
    "gru4rec": {
        "hr@10": 0.1410,
        "ndcg@10": 0.0702,
        "hr@20": 0.2365,
        "ndcg@20": 0.0940,
        "best_valid": 0.0741,
        "seconds_to_best": 34 * 55,
    },
}
PEER_PROTOCOL = {"eval.exclude_history": False, "eval.num_negatives": [19, 100]}


def stage_config(preset: str, run_dir: str, name: str, overrides: dict) -> StageConfig:
    from raylrec.config import parse_overrides

    pairs = [f"{k}={v}" for k, v in {**PEER_PROTOCOL, **overrides}.items()]
    return load_config(StageConfig, preset, {**parse_overrides(pairs), "run_dir": run_dir, "name": name})


def time_to_reach(history: pd.DataFrame, target: float) -> float | None:
    reached = history.loc[history["valid_ndcg@10"] >= target, "elapsed_s"]
    return float(reached.iloc[0]) if len(reached) else None


def test_ranks(config: StageConfig, data: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    """Each test user's full-ranking rank of the target from the stage's exported model: with the history
    not masked (RecBole's protocol), and masked."""
    scorer = sequence_scorer(load_stage_model(stage_dir(config)), data, "test", torch.device("cpu"))
    return tuple(
        Evaluator(data, "test", EvalConfig(exclude_history=masked, num_negatives=[])).ranks(scorer)["full"]
        for masked in (False, True)
    )


def ndcg10_interval(ranks: np.ndarray) -> str:
    low, high = mean_interval(per_user_metrics(ranks, [10])["ndcg@10"])
    return f"{low:.4f}–{high:.4f}"


def quality_row(label: str, test: dict, masked: dict, interval: str, history: pd.DataFrame, fit_s: float, reach) -> str:
    return (
        f"| {label} | {test['hr@10']:.4f} | {test['ndcg@10']:.4f} | {interval} | {test['hr@20']:.4f} "
        f"| {test['ndcg@20']:.4f} | {masked['hr@10']:.4f} / {masked['ndcg@10']:.4f} "
        f"| {history['valid_ndcg@10'].max():.4f} "
        f"| {int(history.loc[history['valid_ndcg@10'].idxmax(), 'epoch'])} "
        f"| {history['epoch_train_s'].median():.1f} "
        f"| {fit_s:.0f} | {'not reached' if reach is None else f'{reach:.0f}'} |"
    )


def mean_row(label: str, tests: list[dict]) -> str:
    """Seed mean ± sample standard deviation of the test metrics."""
    cells = []
    for key in ("hr@10", "ndcg@10", "hr@20", "ndcg@20"):
        values = pd.Series([test[key] for test in tests])
        cells.append(f"{values.mean():.4f} ± {values.std():.4f}")
    cells.insert(2, "")  # no interval for a seed mean
    return f"| {label} | " + " | ".join(cells) + " | | | | | | |"


def quality(run_dir: str, overrides: dict, models: list[str], seeds: list[int]) -> None:
    data_dir = ensure_prepared(load_config(StageConfig, "sasrec").data, run_dir)
    data = PreparedData(data_dir)
    rows = []
    for preset in models:
        tests = []
        for seed in seeds:
            name = preset if len(seeds) == 1 else f"{preset}-seed{seed}"
            config = stage_config(preset, run_dir, name, {**overrides, "train.seed": seed})
            summary = run_training_stage(config, data_dir)
            history = pd.read_csv(stage_dir(config) / "history.csv")
            reach = time_to_reach(history, PEER[preset]["best_valid"])
            tests.append(summary["test"])
            ranks, masked_ranks = test_ranks(config, data)
            rows.append(
                quality_row(
                    f"{preset} (ours, seed {seed})",
                    summary["test"],
                    mean_metrics(masked_ranks, [10]),
                    ndcg10_interval(ranks),
                    history,
                    summary["fit_wall_s"],
                    reach,
                )
            )
        if len(seeds) > 1:
            rows.append(mean_row(f"{preset} (ours, mean ± std of {len(seeds)} seeds)", tests))
        peer = PEER[preset]
        rows.append(
            f"| {preset} (RecBole 1.2.1) | {peer['hr@10']:.4f} | {peer['ndcg@10']:.4f} | — "
            f"| {peer['hr@20']:.4f} | {peer['ndcg@20']:.4f} | — | {peer['best_valid']:.4f} | — | — | — "
            f"| {peer['seconds_to_best']} (to its best) |"
        )
    print("\n## Quality and time (ML-100k, leave-one-out, full ranking, history not masked)\n")
    print(
        "The NDCG@10 interval is a bootstrap over the test users (2,000 resamples): the range one run's score "
        "could take on another sample of users of the same size, not the spread over seeds.\n"
    )
    print(
        "| model | test HR@10 | NDCG@10 | NDCG@10 95 % interval | HR@20 | NDCG@20 | masked HR@10 / NDCG@10 "
        "| best valid NDCG@10 | best epoch | s / train epoch | fit wall s | s to RecBole's best valid |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


def scaling(run_dir: str, overrides: dict, epochs: int) -> None:
    data_dir = ensure_prepared(load_config(StageConfig, "sasrec").data, run_dir)
    rows = []
    for workers in (1, 2):
        config = stage_config(
            "sasrec",
            run_dir,
            f"scaling-{workers}w",
            {
                **overrides,
                "train.num_workers": workers,
                "train.cpus_per_worker": 1,
                "train.max_epochs": epochs,
                "train.patience": epochs,
            },
        )
        started = time.perf_counter()
        run_training_stage(config, data_dir, force=True)
        history = pd.read_csv(stage_dir(config) / "history.csv")
        per_epoch = history["epoch_train_s"].iloc[1:].median()  # epoch 0 includes warm-up
        rows.append((workers, per_epoch, time.perf_counter() - started))
    base = rows[0][1]
    print(f"\n## Ray Train workers (SASRec, {epochs} epochs, {os.cpu_count()} cores)\n")
    print("| workers | median s / train epoch | speed-up | stage wall s |\n|---|---|---|---|")
    for workers, per_epoch, wall in rows:
        print(f"| {workers} | {per_epoch:.2f} | {base / per_epoch:.2f}x | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/bench")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scaling-epochs", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], help="extra overrides for both models, key=value")
    parser.add_argument("--models", nargs="+", choices=sorted(PEER), default=["sasrec", "gru4rec"])
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[2020],
        help="training seeds of the quality runs (several: one row each and their mean ± std)",
    )
    args = parser.parse_args()
    overrides = dict(pair.split("=", 1) for pair in args.set)
    run_dir = str(Path(args.run_dir).resolve())
    if not args.skip_quality:
        quality(run_dir, overrides, args.models, args.seeds)
    if not args.skip_scaling:
        scaling(run_dir, overrides, args.scaling_epochs)


if __name__ == "__main__":
    main()
