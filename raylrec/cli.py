"""`raylrec` command line: thin argument parsing over the library (jobs/ entrypoints call the same functions)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from raylrec.config import deep_merge, load_config, parse_overrides, print_config
from raylrec.errors import RaylrecError
from raylrec.leaderboard.cli import add_leaderboard_command
from raylrec.logging_setup import configure_logging
from raylrec.methods.registry import get_method, registered
from raylrec.storage import DEFAULT_RUN_DIR, RUN_DIR_HELP, RunLayout
from raylrec.text.cli import add_encode_command
from raylrec.tune.cli import add_tune_command

log = logging.getLogger("raylrec")


def cmd_data_fetch(args) -> None:
    from raylrec.data.fetch import fetch_dataset

    raw = fetch_dataset(
        args.dataset,
        Path(args.cache_dir) if args.cache_dir else None,
        allow_unverified=args.allow_unverified,
        source_dir=args.source_dir,
    )
    print(json.dumps({k: str(v) for k, v in vars(raw).items()}, indent=2))


def cmd_data_verify(args) -> None:
    from raylrec.data.verify import verify_dataset

    reference, checks = verify_dataset(
        args.dataset, Path(args.cache_dir) if args.cache_dir else None, args.source_dir, args.allow_unverified
    )
    print(f"{args.dataset}: raw counts against the published statistics ({reference})\n")
    print("| count | published | found | |\n|---|---|---|---|")
    for check in checks:
        print(f"| {check.what} | {check.published:,} | {check.found:,} | {'ok' if check.matches else 'DIFFERS'} |")
    if not all(check.matches for check in checks):
        raise RaylrecError(f"{args.dataset}: counts differ from the published statistics (table above)")


def cmd_data_prepare(args) -> None:
    from raylrec.data.prepare import DataConfig, ensure_prepared

    overrides = parse_overrides(args.set)
    if args.dataset:
        overrides["dataset"] = args.dataset
    config = load_config(DataConfig, args.config, overrides)
    print_config("data config", config)
    data_dir = ensure_prepared(config, args.run_dir, Path(args.cache_dir) if args.cache_dir else None)
    print((data_dir / "data_report.json").read_text())


def config_source(args, default: str | None = None) -> str | None:
    """The config a command reads: `--config FILE` (a YAML file), else `--preset NAME` (a shipped preset), else
    `default`. The old form `--config NAME` (a preset name) still works, with a note."""
    if args.config:
        if Path(args.config).suffix not in (".yaml", ".yml"):
            print(
                f"raylrec: note: --config takes a YAML file; reading {args.config!r} as --preset {args.config} "
                "(use --preset for shipped presets)",
                file=sys.stderr,
            )
        elif not Path(args.config).is_file():
            raise RaylrecError(f"--config {args.config}: no such file")
        return args.config
    return args.preset or default


def cmd_train(args) -> None:
    from raylrec.train.stage import run_id_stage

    overrides = parse_overrides(args.set)
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    cache_root = Path(args.cache_dir) if args.cache_dir else None
    source = config_source(args)
    if args.method:
        if args.stage:  # methods with several stages (allmrec) run only this one, reading the others' artifacts
            overrides["stages"] = [args.stage]
        method = get_method(args.method, "method")
        if args.dry_run:
            print_config(f"method {args.method}", method.load(source, overrides))
            return
        summaries = method.train(source, overrides, cache_root, args.force)
        print(json.dumps(summaries, indent=2, default=str))
        return
    model = get_method(args.model or "sasrec", "id_model")
    config = model.load(source or args.model, overrides)
    if args.model and config.model.name != args.model:
        raise RaylrecError(f"--model {args.model} but the config trains {config.model.name}")
    print_config(f"stage {config.stage_name}", config)
    if args.dry_run:
        return
    print(json.dumps(run_id_stage(config, cache_root, args.force), indent=2))


def cmd_run(args) -> None:
    from raylrec.pipeline import PipelineConfig, method_configs, results_table, run_pipeline

    overrides = parse_overrides(args.set)
    if args.run_dir:
        overrides["run_dir"] = args.run_dir
    source = config_source(args, "default")
    if args.dataset:  # the dataset's own preset when one ships, else the chosen preset on that dataset
        if source == "default" and dataset_preset_exists(args.dataset):
            source = args.dataset
        else:
            overrides = deep_merge({"data": {"dataset": args.dataset}}, overrides)
    config = load_config(PipelineConfig, source, overrides)
    print_config("pipeline", config)
    if args.dry_run:
        for spec, method in zip(config.methods, method_configs(config)):
            print_config(
                f"method {spec.name}" + (f" ({', '.join(spec.set['stages'])})" if "stages" in spec.set else ""), method
            )
        return
    summaries = run_pipeline(config, Path(args.cache_dir) if args.cache_dir else None)
    print("\n" + results_table(summaries, config.eval.ks))
    board = RunLayout(config.run_dir).root / "leaderboard"
    if config.leaderboard and (board / "leaderboard.md").exists():
        print("\n" + (board / "leaderboard.md").read_text())
        print(f"leaderboard: {board} (leaderboard.md, leaderboard.csv, *.png)")
    print(f"\nartifacts: {RunLayout(config.run_dir).root}")


def cmd_presets(args) -> None:
    """Every shipped preset with the first line of its leading comment."""
    from importlib import resources

    for file in sorted((resources.files("raylrec") / "presets").iterdir(), key=lambda f: f.name):
        if file.name.endswith(".yaml") and not file.name.startswith("_"):  # `_name`: a part other presets inherit
            print(f"{file.name.removesuffix('.yaml'):22} {preset_description(file.read_text())}")


def preset_description(text: str) -> str:
    """A preset's one-line description: the first line of its leading comment."""
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.lstrip("#").strip():
            return line.lstrip("#").strip()
    return "(no description)"


def dataset_preset_exists(dataset: str) -> bool:
    from importlib import resources

    return (resources.files("raylrec") / "presets" / f"{dataset}.yaml").is_file()


def cmd_analyze_kendall(args) -> None:
    from raylrec.methods.pad.kendall import analyze_kendall

    result = analyze_kendall(
        Path(args.stage_a),
        Path(args.stage_b),
        args.table_a,
        args.table_b,
        Path(args.data_dir) if args.data_dir else None,
        Path(args.out_dir) if args.out_dir else None,
        args.window,
        args.buckets,
        args.max_pairs or None,
        args.seed,
    )
    print(f"Kendall's τ of behaviour→target distances, {result['label']} (window {result['window']})\n")
    print("| bucket (0 = rarest) | τ | pairs |\n|---|---|---|")
    for row in result["rows"]:
        print(f"| {row.bucket} | {row.tau:.4f} | {row.pairs:,} |")
    print(f"\ntable: {result['csv']}\nplot: {result['png']}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raylrec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"raylrec {package_version()}")
    parser.add_argument("--cache-dir", help="cache root (default $RAYLREC_CACHE_DIR or ~/.cache/raylrec)")
    parser.add_argument(
        "--address",
        default="local",
        help="Ray cluster to join: local (a new local instance, the default), auto (the host's "
        "cluster) or an address such as ray://head:10001 (default: $RAY_ADDRESS if set)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    def with_overrides(p):
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. train.lr=0.01 (repeatable)",
        )
        return p

    data = commands.add_parser("data", help="fetch and prepare datasets").add_subparsers(
        dest="data_command", required=True
    )

    def with_source_options(p):
        p.add_argument("dataset")
        p.add_argument(
            "--source-dir",
            help="directory holding local copies of datasets, a folder per dataset (default $RAYLREC_DATASETS_DIR)",
        )
        p.add_argument(
            "--allow-unverified",
            action="store_true",
            help="also use sources without pinned checksums (the official Amazon dumps)",
        )
        return p

    fetch = with_source_options(data.add_parser("fetch", help="download a dataset into the cache, verifying checksums"))
    fetch.set_defaults(handler=cmd_data_fetch)
    verify = with_source_options(
        data.add_parser("verify", help="compare a dataset's raw counts with the published statistics")
    )
    verify.set_defaults(handler=cmd_data_verify)
    prepare = with_overrides(data.add_parser("prepare", help="prepare a dataset into a run directory"))
    prepare.add_argument("dataset", nargs="?")
    prepare.add_argument("--config", help="YAML file with a DataConfig")
    prepare.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=RUN_DIR_HELP)
    prepare.set_defaults(handler=cmd_data_prepare)

    train = with_overrides(commands.add_parser("train", help="train one ID model, or a method, with Ray Train"))
    what = train.add_mutually_exclusive_group()
    what.add_argument(
        "--model",
        choices=list(registered("id_model")),
        help="an ID backbone (its preset when neither --preset nor --config is given)",
    )
    what.add_argument(
        "--method",
        choices=list(registered("method")),
        help="an LLM-enhanced method, all its stages: "
        + "; ".join(f"{name} ({spec.description})" for name, spec in registered("method").items()),
    )
    add_config_options(
        train,
        "; ".join(f"{name}: {', '.join(spec.presets)}" for name, spec in registered().items())
        + " (default: the model's or method's own)",
    )
    train.add_argument("--run-dir", help=f"{RUN_DIR_HELP} (over the config's run_dir)")
    train.add_argument(
        "--stage",
        help="with --method: run only this stage ("
        + "; ".join(f"{name}: {', '.join(spec.stages)}" for name, spec in registered().items() if spec.stages)
        + ")",
    )
    train.add_argument("--force", action="store_true", help="retrain even if the stage is done")
    train.set_defaults(handler=cmd_train)

    run = with_overrides(commands.add_parser("run", help="the main job: fetch, prepare, train, evaluate"))
    add_config_options(
        run, "default (CPU, minutes; the default), paper (GPU cluster), amazon14-beauty, amazon18-scientific"
    )
    run.add_argument("--run-dir", help=f"{RUN_DIR_HELP} (over the config's run_dir)")
    run.add_argument(
        "--dataset",
        help="run on this dataset: its preset (amazon14-beauty, amazon18-scientific) or, "
        "for other names, --config with data.dataset set to it",
    )
    run.set_defaults(handler=cmd_run)

    analyze = commands.add_parser("analyze", help="analyses of trained models").add_subparsers(
        dest="analyze_command", required=True
    )
    kendall = analyze.add_parser(
        "kendall",
        help="Kendall's τ between two embedding tables' behaviour→target "
        "distances, per item frequency bucket (PAD eq. 13)",
    )
    kendall.add_argument("stage_a", metavar="RUN_A", help="a trained stage folder, e.g. runs/default/models/sasrec-bce")
    kendall.add_argument("stage_b", metavar="RUN_B", help="another one, e.g. runs/default/models/pad")
    kendall.add_argument("--table-a", help="tensor in RUN_A/item_embeddings.safetensors (default item_embeddings)")
    kendall.add_argument("--table-b", help="tensor in RUN_B/item_embeddings.safetensors, e.g. id.item_embeddings")
    kendall.add_argument("--data-dir", help="prepared dataset (default: the one RUN_A was evaluated on)")
    kendall.add_argument("--out-dir", help="where the CSV and PNG go (default <run_dir>/analysis)")
    kendall.add_argument("--window", type=int, help="behaviour items per target (default: RUN_A's max_len)")
    kendall.add_argument("--buckets", type=int, default=10)
    kendall.add_argument("--max-pairs", type=int, default=200_000, help="pairs per bucket (random subset; 0 = all)")
    kendall.add_argument("--seed", type=int, default=0)
    kendall.set_defaults(handler=cmd_analyze_kendall)

    commands.add_parser("presets", help="list the shipped presets with their descriptions").set_defaults(
        handler=cmd_presets
    )
    add_encode_command(commands)
    add_tune_command(commands)
    add_leaderboard_command(commands)
    return parser


def add_config_options(command: argparse.ArgumentParser, presets: str) -> None:
    """--preset NAME or --config FILE (one of them), and --dry-run."""
    source = command.add_mutually_exclusive_group()
    source.add_argument("--preset", help=f"a shipped preset (`raylrec presets` lists them): {presets}")
    source.add_argument("--config", metavar="FILE", help="a YAML config file")
    command.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and exit (no Ray, nothing written)"
    )


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raylrec")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    if args.address != "local":  # ensure_ray (and every Ray task this command starts) joins it
        os.environ["RAY_ADDRESS"] = args.address
    if args.command == "train" and not (args.model or args.config or args.preset or args.method):
        print("raylrec train: give --model, --method, --preset or --config", file=sys.stderr)
        return 2
    try:
        args.handler(args)
    except RaylrecError as err:
        print(f"raylrec: error: {err}", file=sys.stderr)
        return 1
    return 0


def run_job(command: list[str], argv: list[str] | None = None) -> int:
    """Entry point of the `jobs/` scripts (for `ray job submit`): `raylrec <command> ...`, the same parser and
    handlers as the CLI, with the top-level options (--cache-dir, --address, -v) accepted anywhere on the line."""
    top = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    top.add_argument("--cache-dir")
    top.add_argument("--address")
    top.add_argument("-v", "--verbose", action="store_true")
    known, rest = top.parse_known_args(sys.argv[1:] if argv is None else argv)
    prefix = (
        (["--cache-dir", known.cache_dir] if known.cache_dir else [])
        + (["-v"] if known.verbose else [])
        + (["--address", known.address] if known.address else [])
    )
    return main([*prefix, *command, *rest])


if __name__ == "__main__":
    sys.exit(main())
