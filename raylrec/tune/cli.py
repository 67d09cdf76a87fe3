"""`raylrec tune`: a Ray Tune sweep over a method's search space (tune_spaces/<method>.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_tune(args) -> None:
    from raylrec.config import flatten, parse_overrides, print_config
    from raylrec.tune.space import load_space
    from raylrec.tune.sweep import format_summary, run_sweep

    fixed = flatten(parse_overrides(args.set))
    spec = load_space(args.space, {"fixed": fixed} if fixed else None)
    print_config(f"search space {args.space}", spec)
    summary = run_sweep(
        spec,
        args.run_dir,
        name=args.name or Path(args.space).stem,
        dataset=args.dataset,
        cache_root=Path(args.cache_dir) if args.cache_dir else None,
        num_samples=args.num_samples,
        seeds=args.seeds,
        search=args.search,
        max_concurrent=args.max_concurrent,
        retry_failed=args.retry_failed,
    )
    print("\n" + format_summary(summary))
    print(f"\nresults: {summary['results_csv']}\nbest: {Path(summary['results_csv']).parent / 'best.json'}")


def add_tune_command(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune",
        help="hyperparameter sweep with Ray Tune (trials are Ray Train stages; ASHA; resumable)",
        description="Run (or resume: rerun the same command) a sweep. Trials are selected on validation only; "
        "the best configuration is re-run with --seeds seeds and evaluated on test.",
    )
    tune.add_argument("--space", required=True, help="search space YAML, e.g. tune_spaces/sasrec.yaml")
    tune.add_argument("--dataset", help="dataset name (data.dataset of the method's config)")
    tune.add_argument(
        "--run-dir",
        default="runs/default",
        help="run directory: shared artifacts there, the sweep under <run-dir>/sweeps/<name>",
    )
    tune.add_argument("--name", help="sweep name (default: the space file's name)")
    tune.add_argument("--num-samples", type=int, help="random search: trials; grid: repeats of the grid")
    tune.add_argument("--seeds", type=int, help="seed re-runs of the best configuration (default: the space's, 3)")
    tune.add_argument(
        "--search",
        choices=["grid", "random", "optuna", "hyperopt"],
        help="override the space's search algorithm (optuna/hyperopt need that package)",
    )
    tune.add_argument("--max-concurrent", type=int, help="trials at once (default: from the cluster's resources)")
    tune.add_argument("--retry-failed", action="store_true", help="on resume, rerun trials that failed")
    tune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config field for every trial, e.g. train.max_epochs=20 (repeatable)",
    )
    tune.set_defaults(handler=cmd_tune)
