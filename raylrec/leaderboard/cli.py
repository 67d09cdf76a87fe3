"""`raylrec leaderboard RUN_DIR...`."""

from __future__ import annotations

import argparse


def cmd_leaderboard(args) -> None:
    from raylrec.leaderboard.core import build_leaderboard

    result = build_leaderboard(args.run_dirs, args.out, args.baseline, plots=not args.no_plots)
    print(result["markdown"])
    print(f"table: {result['md']}\ncsv: {result['csv']}")
    for png in result["plots"]:
        print(f"plot: {png}")


def add_leaderboard_command(commands: argparse._SubParsersAction) -> None:
    board = commands.add_parser("leaderboard", help="aggregate metrics JSONs into Markdown/CSV tables and PNG plots")
    board.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    board.add_argument("--out", help="output folder (default <first RUN_DIR>/leaderboard)")
    board.add_argument("--baseline", help="row the Improv. column compares with (default SASRec)")
    board.add_argument("--no-plots", action="store_true")
    board.set_defaults(handler=cmd_leaderboard)
