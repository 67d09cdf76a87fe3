"""PAD benchmark on MovieLens-100k: SASRec (phase 1), Hybrid, MoRec and PAD, test HR@10 / NDCG@10 with full
ranking (history masked), overall and for warm / median / cold target items (top / bottom 35 % of items by
training interactions, the rest median), plus the wall time of each phase.

    python bench/pad.py --run-dir runs/pad-bench                  # the CPU preset `pad`, with both baselines
    python bench/pad.py --config pad-paper --run-dir runs/pad-paper-bench

Finished stages are reused (their recorded wall times are printed); use a new run directory to re-measure.
Wall times include each stage's Ray Train start-up and evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from raylrec.config import load_config, parse_overrides
from raylrec.methods.pad.config import PadConfig
from raylrec.methods.pad.pipeline import run_pad
from raylrec.paths import RunLayout

GROUPS = ("warm", "median", "cold")


def metric_cells(metrics: dict) -> list[str]:
    full, groups = metrics["full"], metrics["buckets"]["warm_cold"]
    cells = [f"{full['hr@10']:.4f}", f"{full['ndcg@10']:.4f}"]
    for group in GROUPS:
        g = groups[group]
        cells.append(f"{g.get('hr@10', 0):.4f} / {g.get('ndcg@10', 0):.4f} (n={g['n']})")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pad", help="PAD preset or YAML file")
    parser.add_argument("--run-dir", default="runs/pad-bench")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    config = load_config(PadConfig, args.config, overrides)
    if not config.baselines:
        config = config.model_copy(update={"baselines": ["hybrid", "morec"]})
    started = time.perf_counter()
    summaries = run_pad(config)
    total = time.perf_counter() - started
    layout = RunLayout(config.run_dir)
    rows = {"SASRec (phase 1)": config.pretrain.name, "Hybrid": "hybrid", "MoRec": "morec", "PAD": config.name}

    print(f"\n## Test, full ranking over all items ({config.data.dataset}, history masked)\n")
    print("| model | HR@10 | NDCG@10 | warm HR@10 / NDCG@10 | median | cold |\n|---|---|---|---|---|---|")
    for label, stage in rows.items():
        metrics = json.loads((layout.model_dir(stage) / "metrics_test.json").read_text())["metrics"]
        print(f"| {label} | " + " | ".join(metric_cells(metrics)) + " |")

    pad_phases = [("1 pre-train (SASRec, BCE)", summaries["pretrain"].get("fit_wall_s")),
                  ("text encoding", summaries["encode"]["encode_seconds"]),
                  ("2 alignment", summaries.get("align", {}).get("fit_wall_s")),
                  ("3 experts + gating", summaries["experts"].get("fit_wall_s"))]
    print("\n## Wall time (s; each stage's Ray Train fit incl. start-up and per-epoch validation)\n")
    print("| phase | wall s | best epoch |\n|---|---|---|")
    for (label, seconds), key in zip(pad_phases, ("pretrain", "encode", "align", "experts")):
        epoch = summaries.get(key, {}).get("final_metrics", {}).get("best_epoch", "—")
        print(f"| {label} | {seconds if seconds is not None else '—'} | {epoch} |")
    print(f"| PAD phases 1–3 incl. encoding | {sum(s or 0 for _, s in pad_phases):.1f} | |")
    for baseline in config.baselines:
        print(f"| baseline {baseline} | {summaries[baseline].get('fit_wall_s')} "
              f"| {summaries[baseline].get('final_metrics', {}).get('best_epoch', '—')} |")
    print(f"\nthis invocation: {total:.0f} s (finished stages reused: {config.run_dir})")
    if "gates" in summaries["experts"]:
        print("\nlearned gate weights per frequency bucket (0 = rarest):")
        for bucket, weights in summaries["experts"]["gates"].items():
            print(f"  {bucket}: " + ", ".join(f"{k} {v:.2f}" for k, v in weights.items()))


if __name__ == "__main__":
    main()
