"""`raylrec` command line: thin argument parsing over the library (jobs/ entrypoints call the same functions)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from raylrec.config import deep_merge, load_config, parse_overrides, print_config
from raylrec.errors import RaylrecError
from raylrec.leaderboard.cli import add_leaderboard_command
from raylrec.methods import METHODS
from raylrec.paths import RunLayout
from raylrec.storage import RUN_DIR_HELP
from raylrec.text.cli import add_encode_command
from raylrec.tune.cli import add_tune_command

log = logging.getLogger("raylrec")


def cmd_data_fetch(args) -> None:
    from raylrec.data.fetch import fetch_dataset

    raw = fetch_dataset(args.dataset, Path(args.cache_dir) if args.cache_dir else None,
                        allow_unverified=args.allow_unverified, source_dir=args.source_dir)
    print(json.dumps({k: str(v) for k, v in vars(raw).items()}, indent=2))


def cmd_data_verify(args) -> None:
    from raylrec.data.verify import verify_dataset

    reference, checks = verify_dataset(args.dataset, Path(args.cache_dir) if args.cache_dir else None,
                                       args.source_dir, args.allow_unverified)
    print(f"{args.dataset}: raw counts against the published statistics ({reference})\n")
    print("| count | published | found | |\n|---|---|---|---|")
    for check in checks:
        print(f"| {check.what} | {check.published:,} | {check.found:,} | {'ok' if check.matches else 'DIFFERS'} |")
    if not all(check.matches for check in checks):
        raise RaylrecError(f"{args.dataset}: counts differ from the published statistics (table above)")


def cmd_data_prepare(args) -> None:
    from raylrec.data.prepare import DataConfig
    from raylrec.pipeline import ensure_prepared

    overrides = parse_overrides(args.set)
    if args.dataset:
        overrides["dataset"] = args.dataset
    config = load_config(DataConfig, args.config, overrides)
    print_config("data config", config)
    data_dir = ensure_prepared(config, args.run_dir, Path(args.cache_dir) if args.cache_dir else None)
    print((data_dir / "data_report.json").read_text())


def cmd_train(args) -> None:
    from raylrec.pipeline import ensure_prepared
    from raylrec.train.config import StageConfig
    from raylrec.train.stage import run_training_stage

    overrides = parse_overrides(args.set)
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    cache_root = Path(args.cache_dir) if args.cache_dir else None
    if args.method:
        if args.model:
            raise RaylrecError("give --model (an ID backbone) or --method, not both")
        if args.stage:  # methods with several stages (allmrec) run only this one, reading the others' artifacts
            overrides["stages"] = [args.stage]
        summaries = METHODS[args.method](args.config, overrides, cache_root, args.force)
        print(json.dumps(summaries, indent=2, default=str))
        return
    config = load_config(StageConfig, args.config or args.model, overrides)
    if args.model and config.model.name != args.model:
        raise RaylrecError(f"--model {args.model} but the config trains {config.model.name}")
    print_config(f"stage {config.stage_name}", config)
    data_dir = ensure_prepared(config.data, config.run_dir, cache_root)
    summary = run_training_stage(config, data_dir, force=args.force)
    print(json.dumps(summary, indent=2))


def cmd_run(args) -> None:
    from raylrec.pipeline import PipelineConfig, results_table, run_pipeline

    overrides = parse_overrides(args.set)
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    source = args.config
    if args.dataset:  # the dataset's own preset when one ships, else the chosen preset on that dataset
        if args.config == "default" and dataset_preset_exists(args.dataset):
            source = args.dataset
        else:
            overrides = deep_merge({"data": {"dataset": args.dataset}}, overrides)
    config = load_config(PipelineConfig, source, overrides)
    print_config("pipeline", config)
    summaries = run_pipeline(config, Path(args.cache_dir) if args.cache_dir else None)
    print("\n" + results_table(summaries, config.eval.ks))
    board = RunLayout(config.run_dir).root / "leaderboard"
    if config.leaderboard and (board / "leaderboard.md").exists():
        print("\n" + (board / "leaderboard.md").read_text())
        print(f"leaderboard: {board} (leaderboard.md, leaderboard.csv, *.png)")
    print(f"\nartifacts: {RunLayout(config.run_dir).root}")


def dataset_preset_exists(dataset: str) -> bool:
    from importlib import resources

    return (resources.files("raylrec") / "presets" / f"{dataset}.yaml").is_file()


def cmd_analyze_kendall(args) -> None:
    from raylrec.methods.pad.kendall import analyze_kendall

    result = analyze_kendall(Path(args.stage_a), Path(args.stage_b), args.table_a, args.table_b,
                             Path(args.data_dir) if args.data_dir else None,
                             Path(args.out_dir) if args.out_dir else None, args.window, args.buckets,
                             args.max_pairs or None, args.seed)
    print(f"Kendall's τ of behaviour→target distances, {result['label']} (window {result['window']})\n")
    print("| bucket (0 = rarest) | τ | pairs |\n|---|---|---|")
    for row in result["rows"]:
        print(f"| {row.bucket} | {row.tau:.4f} | {row.pairs:,} |")
    print(f"\ntable: {result['csv']}\nplot: {result['png']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylrec", description=__doc__)
    parser.add_argument("--cache-dir", help="cache root (default $RAYLREC_CACHE_DIR or ~/.cache/raylrec)")
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_overrides(p):
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. train.lr=0.01 (repeatable)")
        return p

    data = commands.add_parser("data", help="fetch and prepare datasets").add_subparsers(dest="data_command",
                                                                                        required=True)
    def with_source_options(p):
        p.add_argument("dataset")
        p.add_argument("--source-dir", help="directory holding local copies of datasets, a folder per dataset "
                                            "(default $RAYLREC_DATASETS_DIR)")
        p.add_argument("--allow-unverified", action="store_true",
                       help="also use sources without pinned checksums (the official Amazon dumps)")
        return p

    fetch = with_source_options(data.add_parser("fetch", help="download a dataset into the cache, verifying "
                                                              "checksums"))
    fetch.set_defaults(handler=cmd_data_fetch)
    verify = with_source_options(data.add_parser("verify", help="compare a dataset's raw counts with the "
                                                                "published statistics"))
    verify.set_defaults(handler=cmd_data_verify)
    prepare = with_overrides(data.add_parser("prepare", help="prepare a dataset into a run directory"))
    prepare.add_argument("dataset", nargs="?")
    prepare.add_argument("--config", help="YAML file with a DataConfig")
    prepare.add_argument("--run-dir", default="runs/default", help=RUN_DIR_HELP)
    prepare.set_defaults(handler=cmd_data_prepare)

    train = with_overrides(commands.add_parser("train", help="train one ID model, or a method, with Ray Train"))
    train.add_argument("--model", choices=["sasrec", "gru4rec"], help="model preset (when --config is omitted)")
    train.add_argument("--method", choices=sorted(METHODS),
                       help="an LLM-enhanced method, all its stages (--config: its preset or YAML, default <method>)")
    train.add_argument("--config", help="YAML config file or preset name (sasrec, sasrec-bce, gru4rec; pad, "
                                        "pad-paper; idle, idle-paper; allmrec, allmrec-paper)")
    train.add_argument("--run-dir", help=RUN_DIR_HELP)
    train.add_argument("--stage", help="with --method: run only this stage (allmrec: stage1, stage2, inference)")
    train.add_argument("--force", action="store_true", help="retrain even if the stage is done")
    train.set_defaults(handler=cmd_train)

    run = with_overrides(commands.add_parser("run", help="the main job: fetch, prepare, train, evaluate"))
    run.add_argument("--config", "--preset", dest="config", default="default",
                     help="YAML PipelineConfig file or preset name: default (CPU, minutes) or paper (GPU cluster)")
    run.add_argument("--run-dir", help=RUN_DIR_HELP)
    run.add_argument("--dataset", help="run on this dataset: its preset (amazon14-beauty, amazon18-scientific) or, "
                                       "for other names, --config with data.dataset set to it")
    run.set_defaults(handler=cmd_run)

    analyze = commands.add_parser("analyze", help="analyses of trained models").add_subparsers(
        dest="analyze_command", required=True)
    kendall = analyze.add_parser("kendall", help="Kendall's τ between two embedding tables' behaviour→target "
                                                 "distances, per item frequency bucket (PAD eq. 13)")
    kendall.add_argument("stage_a", metavar="RUN_A", help="a trained stage folder, e.g. runs/pad/models/sasrec-bce")
    kendall.add_argument("stage_b", metavar="RUN_B", help="another one, e.g. runs/pad/models/pad")
    kendall.add_argument("--table-a", help="tensor in RUN_A/item_embeddings.safetensors (default item_embeddings)")
    kendall.add_argument("--table-b", help="tensor in RUN_B/item_embeddings.safetensors, e.g. id.item_embeddings")
    kendall.add_argument("--data-dir", help="prepared dataset (default: the one RUN_A was evaluated on)")
    kendall.add_argument("--out-dir", help="where the CSV and PNG go (default <run_dir>/analysis)")
    kendall.add_argument("--window", type=int, help="behaviour items per target (default: RUN_A's max_len)")
    kendall.add_argument("--buckets", type=int, default=10)
    kendall.add_argument("--max-pairs", type=int, default=200_000, help="pairs per bucket (random subset; 0 = all)")
    kendall.add_argument("--seed", type=int, default=0)
    kendall.set_defaults(handler=cmd_analyze_kendall)

    add_encode_command(commands)
    add_tune_command(commands)
    add_leaderboard_command(commands)
    return parser


def configure_logging(level: int) -> None:
    """raylrec's log lines, in the driver and in the Ray tasks it starts."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("raylrec").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    if args.command == "train" and not (args.model or args.config or args.method):
        print("raylrec train: give --model, --method or --config", file=sys.stderr)
        return 2
    try:
        args.handler(args)
    except RaylrecError as err:
        print(f"raylrec: error: {err}", file=sys.stderr)
        return 1
    return 0


def run_job(command: list[str], argv: list[str] | None = None) -> int:
    """Entry point of the `jobs/` scripts (for `ray job submit`): `raylrec <command> ...`, the same parser and
    handlers as the CLI, with the top-level options (--cache-dir, -v) accepted anywhere on the line."""
    top = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    top.add_argument("--cache-dir")
    top.add_argument("-v", "--verbose", action="store_true")
    known, rest = top.parse_known_args(sys.argv[1:] if argv is None else argv)
    prefix = (["--cache-dir", known.cache_dir] if known.cache_dir else []) + (["-v"] if known.verbose else [])
    return main([*prefix, *command, *rest])


if __name__ == "__main__":
    sys.exit(main())
