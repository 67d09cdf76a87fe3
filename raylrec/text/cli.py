"""The `raylrec encode` subcommand."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raylrec.config import load_config, parse_overrides, print_config, set_dotted
from raylrec.storage import RUN_DIR_HELP

# Command-line flag → EncodeConfig field it overrides (flags win over --config and --set).
FLAG_FIELDS = {
    "model": "text.model",
    "pooling": "text.pooling",
    "template": "text.template",
    "normalize": "text.normalize",
    "batch_size": "batch_size",
    "actors": "num_actors",
    "max_actors": "max_actors",
}


def cmd_encode(args) -> None:
    from raylrec.data.prepare import DataConfig, ensure_prepared
    from raylrec.text.encode import EncodeConfig, encode_items

    overrides = parse_overrides(args.set)
    for flag, field in FLAG_FIELDS.items():
        if getattr(args, flag) is not None:
            set_dotted(overrides, field, getattr(args, flag))
    config = load_config(EncodeConfig, args.config, overrides)
    print_config("encode config", config)
    cache_root = Path(args.cache_dir) if args.cache_dir else None
    data_dir = (
        Path(args.data_dir)
        if args.data_dir
        else ensure_prepared(DataConfig(dataset=args.dataset), args.run_dir, cache_root)
    )
    result = encode_items(config, data_dir, args.run_dir, cache_root)
    print(json.dumps({"path": str(result.path), "cache_hit": result.cache_hit, **result.meta.model_dump()}, indent=2))


def add_encode_command(subparsers: argparse._SubParsersAction) -> None:
    from raylrec.text.registry import PACKAGED_MODELS  # no torch import: keeps `raylrec --help` fast

    encode = subparsers.add_parser(
        "encode",
        help="encode item texts with a pre-trained text model (Ray Data job, cached)",
        description="Turn every item's text into a vector; writes <run-dir>/embeddings/<key>/.",
    )
    encode.add_argument(
        "--dataset", default="ml-100k", help="dataset under <run-dir>/data/ (prepared there if missing)"
    )
    encode.add_argument("--data-dir", help="an already prepared dataset folder (instead of --dataset)")
    encode.add_argument("--run-dir", default="runs/default", help=RUN_DIR_HELP)
    encode.add_argument(
        "--model",
        help=f"packaged short name ({', '.join(PACKAGED_MODELS)}), local folder or Hugging Face id (default minilm)",
    )
    encode.add_argument(
        "--pooling",
        help="auto (default: sentence for sentence-transformers models, else mean), sentence, mean or last_token",
    )
    encode.add_argument("--template", help='item text format, e.g. "{title}; {genres}" (default: per dataset)')
    encode.add_argument("--normalize", action="store_const", const=True, help="L2-normalise the vectors")
    encode.add_argument("--batch-size", type=int)
    encode.add_argument("--actors", type=int, help="actor pool size (default 1)")
    encode.add_argument("--max-actors", type=int, help="autoscale the pool from --actors up to this")
    encode.add_argument("--config", help="YAML file with an EncodeConfig")
    encode.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. text.max_length=64 (repeatable)",
    )
    encode.set_defaults(handler=cmd_encode)
