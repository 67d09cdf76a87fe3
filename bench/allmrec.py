"""A-LLMRec benchmark on MovieLens-100k: for each preset (default: the main job's `allmrec` and the longer
`allmrec-long`), per-stage wall time, stage 1's collapse diagnostics, and on the same sampled users and the same 20
stored candidates (1 target + 19 negatives): A-LLMRec's likelihood ranking (HR@1 / NDCG@5, summed and
length-normalised log-likelihood), its generation Hit@1 and valid-candidate rate, next to item popularity and the
SASRec (BCE) backbone — overall and for warm / cold target items (top / bottom 35 % of items by training count).

    python bench/allmrec.py                                    # allmrec + allmrec-long in runs/allmrec-bench
    python bench/allmrec.py --configs allmrec --run-dir runs/e2e --set 'eval.ks=[1,5,10,20]' \\
        --set 'eval.num_negatives=[19,100]'                    # read back the main job's own A-LLMRec
    python bench/allmrec.py --configs allmrec-paper --run-dir runs/allmrec-paper-bench

The presets share the run directory's backbone; their stages are named by the preset's `name` (allmrec-*,
allmrec-long-*). Finished stages are reused (their recorded wall times are printed); use a new run directory to
re-measure. Wall times include each stage's Ray Train start-up, export and evaluation; the machine's load average
is printed next to them because on a shared box it dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from raylrec.config import load_config, parse_overrides
from raylrec.eval.compare import compare_frames
from raylrec.eval.ranks import read_ranks
from raylrec.methods.allmrec.config import ALLMRecConfig
from raylrec.methods.allmrec.pipeline import run_allmrec
from raylrec.storage import RunLayout

VARIANT_LABELS = {"e": "A-LLMRec", "q": "A-LLMRec (SBERT, q_i)", "q_cold": "A-LLMRec (q_i for cold)"}


def cell(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def ranking_cells(metrics: dict, n: int) -> list[str]:
    """HR@1 / NDCG@5 of the headline ranking, then of the summed and of the length-normalised likelihood."""
    sampled = metrics[f"sampled_{n}"]
    cells = [cell(sampled["hr@1"]), cell(sampled["ndcg@5"])]
    for scoring in ("sum", "mean"):
        scored = metrics.get("likelihood", {}).get(scoring, {}).get(f"sampled_{n}")
        cells.append("–" if scored is None else f"{cell(scored['hr@1'])} / {cell(scored['ndcg@5'])}")
    return cells


def candidate_row(label: str, metrics: dict, n: int) -> str:
    groups = metrics["buckets"]["warm_cold"]
    generation = metrics.get("generation", {})
    overall = generation.get("all", {})
    cells = ranking_cells(metrics, n) + [cell(overall.get("hit@1")), cell(overall.get("valid_rate"))]
    for group in ("warm", "cold"):
        g = groups.get(group, {})
        gen = generation.get(group, {}).get("hit@1")
        cells.append(f"{cell(gen)} / {cell(g.get('hr@1'))} / {cell(g.get('ndcg@5'))} (n={g.get('n', 0)})")
    return f"| {label} | " + " | ".join(cells) + " |"


def read_metrics(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def sampled_ranks(evaluation: Path, split: str, name: str, users: set[int]):
    frame = read_ranks(evaluation / f"ranks_{split}_{name}.parquet")
    return frame[frame["user"].isin(users)]


def print_differences(config: ALLMRecConfig, evaluation: Path, split: str, n: int) -> None:
    """Paired bootstrap intervals (same users, same candidates) of A-LLMRec minus popularity and minus its backbone."""
    users = set(json.loads((evaluation / f"metrics_{split}_backbone.json").read_text())["users"])
    references = {"popularity": "popularity", config.backbone.name: "backbone"}
    print(f"\nPaired differences over the {len(users)} sampled users (mean [95 % bootstrap interval]):\n")
    print("| A-LLMRec ranking | minus | HR@1 | NDCG@5 |\n|---|---|---|---|")
    for variant in config.inference.variants:
        for scoring in ("sum", "mean"):
            ours = sampled_ranks(evaluation, split, f"{variant}_{scoring}", users)
            for label, name in references.items():
                theirs = sampled_ranks(evaluation, split, name, users)
                cells = [
                    str(compare_frames(ours, theirs, metric, f"sampled_{n}").overall) for metric in ("hr@1", "ndcg@5")
                ]
                print(f"| {VARIANT_LABELS[variant]}, {scoring} | {label} | " + " | ".join(cells) + " |")


def print_preset(config: ALLMRecConfig, summaries: dict, total: float) -> None:
    layout = RunLayout(config.run_dir)
    n = config.stage2.prompt.num_negatives
    evaluation = layout.model_dir(config.eval_name)
    print(
        f"\n# preset `{config.name}`: stage 2 on {config.stage2.train_users or 'all'} users × "
        f"{config.stage2.train.max_epochs} epoch(s), lr {config.stage2.train.lr}, history "
        f"{config.stage2.prompt.num_history}; headline ranking: {config.inference.rank_by}"
    )
    for warning in summaries["inference"].get("warnings", []):
        print(f"\nWARNING: {warning}")
    for split in config.inference.splits:
        users = summaries["inference"]["splits"][split]
        print(
            f"\n## {split}: {users['users']} sampled users (+ every cold-target user in the cold column: "
            f"{users['evaluated_users']} evaluated), 1 target + {n} stored negatives each\n"
        )
        print(
            "| model | HR@1 | NDCG@5 | likelihood sum: HR@1 / NDCG@5 | length-normalised: HR@1 / NDCG@5 | "
            "Hit@1 (generation) | valid rate (generation) | warm: gen Hit@1 / HR@1 / NDCG@5 | "
            "cold: gen Hit@1 / HR@1 / NDCG@5 |\n|---|---|---|---|---|---|---|---|---|"
        )
        popularity = read_metrics(evaluation / f"metrics_{split}_popularity.json")
        print(candidate_row("popularity (training counts)", popularity, n))
        print(
            candidate_row(
                f"{config.backbone.name} (backbone scores)",
                read_metrics(evaluation / f"metrics_{split}_backbone.json"),
                n,
            )
        )
        for name in config.inference.compare_id_models:
            other = evaluation / f"metrics_{split}_id_{name}.json"
            if other.exists():
                print(candidate_row(f"{name} (scores)", read_metrics(other), n))
        for variant in config.inference.variants:
            metrics = read_metrics(evaluation / f"metrics_{split}_{variant}.json")
            seconds = metrics.get("inference_seconds")
            print(candidate_row(VARIANT_LABELS[variant], metrics, n) + f"  <!-- {seconds} s -->")
        print_differences(config, evaluation, split, n)

    stage1 = summaries.get("stage1") or json.loads((layout.model_dir(config.stage1_name) / "DONE.json").read_text())
    diagnostics = stage1.get("diagnostics", {})
    stage2 = summaries.get("stage2") or json.loads((layout.model_dir(config.stage2_name) / "DONE.json").read_text())
    projected = stage2.get("diagnostics", {})
    print("\n## Collapse diagnostics (all items; per-dimension std / mean pairwise cosine)\n")
    print("| table | std per dim | mean cosine |\n|---|---|---|")
    for name, stats in [*diagnostics.items(), *projected.items()]:
        if isinstance(stats, dict):
            print(f"| {name} | {stats['std_per_dim']:.4g} | {stats['mean_cosine']:.4f} |")
    if "e_to_q_retrieval@1" in diagnostics:
        print(
            f"\ne→q retrieval@1: {diagnostics['e_to_q_retrieval@1']:.4f} "
            f"(chance {diagnostics['chance_retrieval@1']:.4f})"
        )

    print(
        "\n## Stages\n\n| stage | wall s (this run) | fit wall s (recorded) | best epoch | trainable params |\n"
        "|---|---|---|---|---|"
    )
    wall = summaries.get("wall_seconds", {})
    for stage in ("backbone", "stage1", "stage2", "inference"):
        summary = summaries.get(stage, {})
        params = summary.get("trainable_params")
        best = summary.get("final_metrics", {}).get("best_epoch", "–")
        print(
            f"| {stage} | {wall.get(stage, '–')} | {summary.get('fit_wall_s', '–')} | {best} | "
            f"{'–' if params is None else f'{params:,}'} |"
        )
    frozen = summaries.get("stage2", {}).get("frozen_llm_params")
    if frozen:
        print(f"\nfrozen LLM ({config.stage2.llm}): {frozen:,} parameters, not in any checkpoint")
    print(f"\n`{config.name}`: {total:.0f} s in this run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["allmrec", "allmrec-long"],
        help="A-LLMRec presets or YAML files, run one after another in the same run directory",
    )
    parser.add_argument("--run-dir", default="runs/allmrec-bench")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides, applied to every preset"
    )
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    load_before = os.getloadavg()
    for source in args.configs:
        config = load_config(ALLMRecConfig, source, overrides)
        started = time.perf_counter()
        summaries = run_allmrec(config)
        print_preset(config, summaries, time.perf_counter() - started)
    load_after = os.getloadavg()
    print(f"\nload average before {load_before[0]:.1f}, after {load_after[0]:.1f} (1-min; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
