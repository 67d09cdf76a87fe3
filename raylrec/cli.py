"""`raylrec` command line: thin argument parsing over the library (jobs/ entrypoints call the same functions)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from raylrec.config import load_config, parse_overrides
from raylrec.errors import RaylrecError
from raylrec.text.cli import add_encode_command

log = logging.getLogger("raylrec")


def print_config(title: str, config) -> None:
    print(f"# {title}\n{config.to_yaml()}", flush=True)


def cmd_data_fetch(args) -> None:
    from raylrec.data.fetch import fetch_dataset

    raw = fetch_dataset(args.dataset, Path(args.cache_dir) if args.cache_dir else None)
    print(json.dumps({k: str(v) for k, v in vars(raw).items()}, indent=2))


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
    config = load_config(StageConfig, args.config or args.model, overrides)
    if args.model and config.model.name != args.model:
        raise RaylrecError(f"--model {args.model} but the config trains {config.model.name}")
    print_config(f"stage {config.stage_name}", config)
    data_dir = ensure_prepared(config.data, config.run_dir, Path(args.cache_dir) if args.cache_dir else None)
    summary = run_training_stage(config, data_dir, force=args.force)
    print(json.dumps(summary, indent=2))


def cmd_run(args) -> None:
    from raylrec.pipeline import PipelineConfig, results_table, run_pipeline

    overrides = parse_overrides(args.set)
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    config = load_config(PipelineConfig, args.config, overrides)
    print_config("pipeline", config)
    summaries = run_pipeline(config, Path(args.cache_dir) if args.cache_dir else None)
    print("\n" + results_table(summaries, config.eval.ks))
    print(f"\nartifacts: {Path(config.run_dir).resolve()}")


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
    fetch = data.add_parser("fetch", help="download a dataset into the cache, verifying checksums")
    fetch.add_argument("dataset")
    fetch.set_defaults(handler=cmd_data_fetch)
    prepare = with_overrides(data.add_parser("prepare", help="prepare a dataset into a run directory"))
    prepare.add_argument("dataset", nargs="?")
    prepare.add_argument("--config", help="YAML file with a DataConfig")
    prepare.add_argument("--run-dir", default="runs/default")
    prepare.set_defaults(handler=cmd_data_prepare)

    train = with_overrides(commands.add_parser("train", help="train one ID model with Ray Train"))
    train.add_argument("--model", choices=["sasrec", "gru4rec"], help="model preset (when --config is omitted)")
    train.add_argument("--config", help="YAML StageConfig file or preset name (sasrec, sasrec-bce, gru4rec)")
    train.add_argument("--run-dir")
    train.add_argument("--force", action="store_true", help="retrain even if the stage is done")
    train.set_defaults(handler=cmd_train)

    run = with_overrides(commands.add_parser("run", help="the main job: fetch, prepare, train, evaluate"))
    run.add_argument("--config", default="default", help="YAML PipelineConfig file or preset name")
    run.add_argument("--run-dir")
    run.set_defaults(handler=cmd_run)

    add_encode_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.command == "train" and not (args.model or args.config):
        print("raylrec train: give --model or --config", file=sys.stderr)
        return 2
    try:
        args.handler(args)
    except RaylrecError as err:
        print(f"raylrec: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
