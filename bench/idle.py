"""IDLE-Adapter benchmark on MovieLens-100k: the frozen ID backbone alone vs IDLE-Adapter on it (the paper's
Table 3 question), with `minilm` (encoder) and `smollm2-135m` (decoder), and the three ablations of Table 4
(w/o LayerWise, w/o Refinement, w/o Distribution) on minilm. Test HR@5/10 and NDCG@5/10 with full ranking
(history masked), the stage's wall time (Ray Train start-up, training, per-epoch validation) and trainable
parameters.

    python bench/idle.py                                   # every variant, the CPU preset `idle`
    python bench/idle.py --variants minilm no-distribution # a subset
    python bench/idle.py --set subsequences_per_user=2     # reduce every variant further

All variants share one run directory (default: the preset's, runs/idle), so the ID backbone trains once and the
minilm variant is the preset's own stage; finished variants are reused (their
recorded wall times are printed): use a new run directory to re-measure. The decoder variant is much slower
per token than minilm on CPU; `--decoder-set` reduces only it (default: 1 sub-sequence per user, 1 epoch,
per-epoch validation on 200 users; the final valid/test metrics always use every user).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from raylrec.config import deep_merge, load_config, parse_overrides
from raylrec.methods.idle.config import IdleConfig
from raylrec.methods.idle.pipeline import run_idle
from raylrec.paths import RunLayout

VARIANTS: dict[str, tuple[str, dict]] = {
    "minilm": ("IDLE-Adapter, minilm", {}),
    "smollm2": ("IDLE-Adapter, smollm2-135m", {"backbone": "smollm2-135m"}),
    "no-layerwise": ("minilm w/o LayerWise", {"adapter": {"layerwise": False}}),
    "no-refinement": ("minilm w/o Refinement", {"adapter": {"refinement": False}}),
    "no-distribution": ("minilm w/o Distribution", {"mmd": {"weight": 0.0}}),
}
DECODER_DEFAULTS = ["subsequences_per_user=1", "train.max_epochs=1", "train.valid_users=200"]
COLUMNS = ("hr@5", "hr@10", "ndcg@5", "ndcg@10")


def row(label: str, stage_dir: Path, summary: dict) -> str:
    test = json.loads((stage_dir / "metrics_test.json").read_text())["metrics"]["full"]
    return (f"| {label} | " + " | ".join(f"{test[c]:.4f}" for c in COLUMNS)
            + f" | {summary.get('fit_wall_s', '?')} | {summary.get('trainable_params', 0):,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="idle", help="IDLE preset or YAML file (the base of every variant)")
    parser.add_argument("--run-dir", default="runs/idle")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="overrides for every variant")
    parser.add_argument("--decoder-set", action="append", default=None, metavar="KEY=VALUE",
                        help=f"extra overrides for decoder variants (default: {' '.join(DECODER_DEFAULTS)})")
    args = parser.parse_args()
    base = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    decoder = parse_overrides(DECODER_DEFAULTS if args.decoder_set is None else args.decoder_set)
    lines, timings, id_summary, config = [], {}, None, None
    for key in args.variants:
        label, switches = VARIANTS[key]
        # The plain minilm variant is the preset itself (its stage is shared with `raylrec train --method idle`).
        overrides = deep_merge(base, switches) if key == "minilm" else deep_merge(deep_merge(base, switches),
                                                                                   {"name": f"idle-{key}"})
        if switches.get("backbone", "minilm") != "minilm":
            overrides = deep_merge(overrides, decoder)
        config = load_config(IdleConfig, args.config, overrides)
        print(f"\n# variant {key}\n{config.to_yaml()}", flush=True)
        started, load_before = time.perf_counter(), os.getloadavg()[1]
        summaries = run_idle(config)
        timings[key] = (time.perf_counter() - started, load_before, os.getloadavg()[1])
        id_summary = summaries["id_model"]
        layout = RunLayout(config.run_dir)
        lines.append(row(label, layout.model_dir(config.name), summaries["idle"]))
    layout = RunLayout(config.run_dir)
    id_row = row(f"{config.id_model.name} alone (frozen ID backbone)", layout.model_dir(config.id_model.name),
                 id_summary)
    table = "\n".join([f"## Test, full ranking over all items ({config.data.dataset}, history masked)\n",
                       "| model | HR@5 | HR@10 | NDCG@5 | NDCG@10 | stage wall s | trainable params |",
                       "|---|---|---|---|---|---|---|", id_row, *lines,
                       "\nbench wall s per variant (incl. export evaluation; a reused stage ≈ 0) [5-min load "
                       f"average before → after, {os.cpu_count()} cores]: "
                       + ", ".join(f"{k} {v[0]:.0f} [{v[1]:.0f} → {v[2]:.0f}]" for k, v in timings.items())])
    print("\n" + table)
    (layout.root / "bench_idle.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
