"""A-LLMRec benchmark on MovieLens-100k: per-stage wall time, trainable parameters, and on the same test users
and the same 20 stored candidates (1 target + 19 negatives): A-LLMRec's generation Hit@1 and likelihood-ranking
HR@1 / NDCG@5, A-LLMRec (SBERT: q_i instead of e_i), and the SASRec backbone — overall and for warm / cold target
items (top / bottom 35 % of items by training interactions).

    python bench/allmrec.py --run-dir runs/allmrec-bench                 # the CPU preset `allmrec`
    python bench/allmrec.py --config allmrec-paper --run-dir runs/allmrec-paper-bench

Finished stages are reused (their recorded wall times are printed); use a new run directory to re-measure. Wall
times include each stage's Ray Train start-up, export and evaluation; the machine's load average is printed
next to them because on a shared box it dominates.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from raylrec.config import load_config, parse_overrides
from raylrec.methods.allmrec.config import ALLMRecConfig
from raylrec.methods.allmrec.pipeline import run_allmrec
from raylrec.paths import RunLayout


def cell(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def candidate_row(label: str, metrics: dict, n: int) -> str:
    sampled, groups = metrics[f"sampled_{n}"], metrics["buckets"]["warm_cold"]
    generation = metrics.get("generation", {})
    cells = [cell(generation.get("all", {}).get("hit@1")), cell(sampled["hr@1"]), cell(sampled["ndcg@5"])]
    for group in ("warm", "cold"):
        g = groups.get(group, {})
        gen = generation.get(group, {}).get("hit@1")
        cells.append(f"{cell(gen)} / {cell(g.get('hr@1'))} / {cell(g.get('ndcg@5'))} (n={g.get('n', 0)})")
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="allmrec", help="A-LLMRec preset or YAML file")
    parser.add_argument("--run-dir", default="runs/allmrec-bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    config = load_config(ALLMRecConfig, args.config, overrides)
    load_before = os.getloadavg()
    started = time.perf_counter()
    summaries = run_allmrec(config)
    total = time.perf_counter() - started
    load_after = os.getloadavg()
    layout = RunLayout(config.run_dir)
    n = config.stage2.prompt.num_negatives
    evaluation = layout.model_dir(config.eval_name)

    for split in config.inference.splits:
        users = summaries["inference"]["splits"][split]
        print(f"\n## {split}: {users['users']} sampled users (+ every cold-target user in the cold column: "
              f"{users['evaluated_users']} evaluated), 1 target + {n} stored negatives each\n")
        print("| model | Hit@1 (generation) | HR@1 (likelihood) | NDCG@5 (likelihood) | warm: gen Hit@1 / HR@1 / "
              "NDCG@5 | cold: gen Hit@1 / HR@1 / NDCG@5 |\n|---|---|---|---|---|---|")
        backbone = json.loads((evaluation / f"metrics_{split}_backbone.json").read_text())["metrics"]
        print(candidate_row(f"{config.backbone.name} (scores, backbone)", backbone, n))
        for name in config.inference.compare_id_models:
            other = evaluation / f"metrics_{split}_id_{name}.json"
            if other.exists():
                print(candidate_row(f"{name} (scores)", json.loads(other.read_text())["metrics"], n))
        for variant in config.inference.variants:
            label = {"e": "A-LLMRec", "q": "A-LLMRec (SBERT, q_i)", "q_cold": "A-LLMRec (q_i for cold)"}[variant]
            metrics = json.loads((evaluation / f"metrics_{split}_{variant}.json").read_text())["metrics"]
            print(candidate_row(label, metrics, n) + f"  <!-- {metrics.get('inference_seconds')} s -->")

    print("\n## Stages\n\n| stage | wall s (this run) | fit wall s (recorded) | trainable params |\n|---|---|---|---|")
    wall = summaries.get("wall_seconds", {})
    for stage in ("backbone", "stage1", "stage2", "inference"):
        summary = summaries.get(stage, {})
        params = summary.get("trainable_params")
        print(f"| {stage} | {wall.get(stage, '–')} | {summary.get('fit_wall_s', '–')} | "
              f"{'–' if params is None else f'{params:,}'} |")
    frozen = summaries.get("stage2", {}).get("frozen_llm_params")
    if frozen:
        print(f"\nfrozen LLM ({config.stage2.llm}): {frozen:,} parameters, not in any checkpoint")
    print(f"\ntotal {total:.0f} s; load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          f"(1-min; {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
