"""PAD benchmark on MovieLens-100k: PAD built on each ID backbone of the main job (the cross-entropy SASRec
`sasrec` and the BCE SASRec `sasrec-bce`), each of its experts alone, phase 2 alone, Hybrid and MoRec, against
SASRec, with paired bootstrap intervals (raylrec/eval/compare.py) overall and on the rarest two of the 10
equal-mass target-frequency buckets; per-bucket NDCG@10, the expert diagnostics and each stage's wall time.

    python bench/pad.py --run-dir runs/pad-bench                    # preset `pad` on both backbones + baselines
    python bench/pad.py --run-dir runs/pad-bench --backbones sasrec # only the preset's own backbone
    python bench/pad.py --config pad-paper --run-dir runs/pad-paper-bench --backbones sasrec-bce-paper

The preset's own backbone (its `pretrain`) trains PAD under the preset's `name`; any other backbone is one of the
main job's stages (raylrec/presets/default.yaml, same settings, so a copied main-job run directory has it done)
and its PAD phases are named `<name>-on-<backbone>`. Hybrid and MoRec train with the settings of the backbone
given by --baselines-on. Finished stages are reused (their recorded wall times are printed): copy a main-job run
directory (`cp -a runs/default runs/pad-bench`) to reuse its backbones and text encodings, and delete PAD's
stage folders there to retrain them. Wall times include each stage's Ray Train start-up and evaluation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from raylrec.config import load_config, parse_overrides
from raylrec.data.prepare import ensure_prepared
from raylrec.data.prepared import PreparedData
from raylrec.eval.compare import RAREST, Comparison, compare_frames
from raylrec.eval.ranks import ranks_file, read_ranks
from raylrec.methods.pad.config import PadConfig
from raylrec.methods.pad.experts import DIAGNOSTICS_FILE, expert_ranks_file
from raylrec.methods.pad.pipeline import run_pad
from raylrec.pipeline import PipelineConfig
from raylrec.storage import RunLayout

REFERENCE = "sasrec"  # the cross-entropy SASRec: the strongest ID model of the main job
BACKBONE_LABELS = {"sasrec": "SASRec (cross-entropy; the reference)", "sasrec-bce": "SASRec (BCE)"}
METRIC = "ndcg@10"


def backbone_config(config: PadConfig, backbone: str, baselines: list[str]) -> PadConfig:
    """The preset on one backbone: its own `pretrain`, or the main job's stage of that name."""
    if backbone == config.pretrain.name:
        return config.model_copy(update={"baselines": baselines})
    stages = {spec.name: spec for spec in load_config(PipelineConfig, "default").stages}
    if backbone not in stages:
        raise SystemExit(
            f"backbone {backbone!r} is neither the preset's pretrain stage ({config.pretrain.name}) "
            f"nor a stage of the main job ({', '.join(stages)})"
        )
    return config.model_copy(
        update={"pretrain": stages[backbone], "name": f"{config.name}-on-{backbone}", "baselines": baselines}
    )


def metrics_of(stage_dir: Path, split: str) -> dict:
    return json.loads((stage_dir / f"metrics_{split}.json").read_text())["metrics"]


def rarest_ndcg(metrics: dict) -> tuple[float, int]:
    """NDCG@10 of the users whose target is in the rarest two frequency buckets, pooled (weighted by users)."""
    buckets = [metrics["buckets"]["frequency"][str(b)] for b in range(RAREST)]
    n = sum(b["n"] for b in buckets)
    return (sum(b.get(METRIC, 0.0) * b["n"] for b in buckets) / n if n else 0.0), n


def interval(comparison: Comparison | None, part: str) -> str:
    if comparison is None:
        return "—"
    difference = getattr(comparison, part)
    mark = " ↑" if difference.significant and difference.mean > 0 else " ↓" if difference.significant else ""
    return f"{difference}{mark}"


class Rows:
    """Table rows: a label, the stage's (or expert's) test ranks, and its validation / test numbers."""

    def __init__(self, layout: RunLayout):
        self.layout = layout
        self.reference = read_ranks(ranks_file(layout.model_dir(REFERENCE), "test"))
        self.lines: list[str] = []

    def add(
        self, label: str, ranks_path: Path, valid: float, test_hr: float, test_ndcg: float, rare: float, rare_n: int
    ) -> None:
        comparison = None
        if ranks_path.exists() and ranks_path != ranks_file(self.layout.model_dir(REFERENCE), "test"):
            comparison = compare_frames(read_ranks(ranks_path), self.reference, METRIC)
        self.lines.append(
            f"| {label} | {valid:.4f} | {test_hr:.4f} | {test_ndcg:.4f} | {rare:.4f} (n={rare_n}) | "
            f"{interval(comparison, 'overall')} | {interval(comparison, 'rarest')} |"
        )

    def add_stage(self, label: str, stage: str) -> None:
        stage_dir = self.layout.model_dir(stage)
        valid, test = metrics_of(stage_dir, "valid"), metrics_of(stage_dir, "test")
        self.add(
            label,
            ranks_file(stage_dir, "test"),
            valid["full"][METRIC],
            test["full"]["hr@10"],
            test["full"][METRIC],
            *rarest_ndcg(test),
        )

    def add_experts(self, label: str, stage: str) -> None:
        stage_dir = self.layout.model_dir(stage)
        diagnostics = json.loads((stage_dir / DIAGNOSTICS_FILE).read_text())
        for name, test in diagnostics["test"]["experts"].items():
            valid = diagnostics["valid"]["experts"][name]
            self.add(
                f"{label}: {name} expert alone",
                expert_ranks_file(stage_dir, "test", name),
                valid[METRIC],
                test["hr@10"],
                test[METRIC],
                test[f"rarest_two_{METRIC}"],
                test["rarest_two_n"],
            )


def print_buckets(layout: RunLayout, stages: dict[str, str]) -> None:
    print("\n## Test NDCG@10 per target-frequency bucket (10 equal-mass buckets, 0 = rarest; n = test users)\n")
    metrics = {label: metrics_of(layout.model_dir(stage), "test") for label, stage in stages.items()}
    counts = next(iter(metrics.values()))["buckets"]["frequency"]
    print("| model | " + " | ".join(f"{b} (n={counts[str(b)]['n']})" for b in range(10)) + " |")
    print("|---|" + "---|" * 10)
    for label, m in metrics.items():
        print(
            f"| {label} | "
            + " | ".join(f"{m['buckets']['frequency'][str(b)].get(METRIC, 0):.4f}" for b in range(10))
            + " |"
        )
    reference = read_ranks(ranks_file(layout.model_dir(REFERENCE), "test"))
    for label, stage in stages.items():
        if stage == REFERENCE:
            continue
        comparison = compare_frames(read_ranks(ranks_file(layout.model_dir(stage), "test")), reference, METRIC)
        print(f"| Δ {label} − SASRec [95 % CI] | " + " | ".join(str(comparison.buckets[b]) for b in range(10)) + " |")


def print_diagnostics(label: str, stage_dir: Path) -> None:
    diagnostics = json.loads((stage_dir / DIAGNOSTICS_FILE).read_text())
    temperature = f", temperature τ = {diagnostics['temperature']}" if "temperature" in diagnostics else ""
    print(f"\n### {label}: experts (test split{temperature})\n")
    print("| expert | valid NDCG@10 | test NDCG@10 | test rarest-two NDCG@10 | logit std | logit max − min |")
    print("|---|---|---|---|---|---|")
    for name, test in diagnostics["test"]["experts"].items():
        valid = diagnostics["valid"]["experts"][name]
        print(
            f"| {name} | {valid[METRIC]:.4f} | {test[METRIC]:.4f} | {test[f'rarest_two_{METRIC}']:.4f} | "
            f"{test['logit_std']:.2f} | {test['logit_range']:.2f} |"
        )
    gates = diagnostics["test"]["mean_gate_by_bucket"]
    names = list(diagnostics["test"]["experts"])
    print(
        "\nmean gate per gate bucket (test users × the bucket's items; 0 = rarest): "
        + "; ".join(f"{b}: " + "/".join(f"{gates[b][n]:.2f}" for n in names) for b in gates)
        + f"  ({'/'.join(names)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="pad", help="PAD preset or YAML file")
    parser.add_argument("--run-dir", default="runs/pad-bench")
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["sasrec", "sasrec-bce"],
        help="backbone stages to build PAD on (first: the preset's own, or main-job stages)",
    )
    parser.add_argument(
        "--baselines-on",
        default="sasrec-bce",
        help="the backbone whose training settings Hybrid and MoRec use ('none': no baselines)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()
    overrides = {**parse_overrides(args.set), "run_dir": str(Path(args.run_dir).resolve())}
    preset = load_config(PadConfig, args.config, overrides)
    configs = [
        backbone_config(preset, backbone, ["hybrid", "morec"] if backbone == args.baselines_on else [])
        for backbone in args.backbones
    ]
    if args.baselines_on not in ("none", *args.backbones):
        configs.append(backbone_config(preset, args.baselines_on, ["hybrid", "morec"]))
    started = time.perf_counter()
    summaries = {config.name: run_pad(config) for config in configs}
    total = time.perf_counter() - started
    layout = RunLayout(preset.run_dir)
    data = PreparedData(ensure_prepared(preset.data, preset.run_dir))

    print(
        f"\n## {preset.data.dataset}: test, full ranking over all {data.num_items} items (history masked), "
        f"{data.num_users} users\n"
    )
    print(
        "Δ = mean over test users of the row's NDCG@10 minus SASRec's (cross-entropy), 95 % paired bootstrap "
        f"interval; rarest two = users whose target is in the rarest {RAREST} of 10 equal-mass frequency buckets; "
        "↑/↓ = the interval excludes 0.\n"
    )
    print(
        "| model | valid NDCG@10 | test HR@10 | test NDCG@10 | test rarest-two NDCG@10 | Δ NDCG@10 vs SASRec | "
        "Δ rarest two vs SASRec |\n|---|---|---|---|---|---|---|"
    )
    rows = Rows(layout)
    bucket_rows = {}
    for config in configs:
        backbone = config.pretrain.name
        if layout.model_dir(backbone).joinpath("metrics_test.json").exists() and backbone not in bucket_rows.values():
            rows.add_stage(BACKBONE_LABELS.get(backbone, backbone), backbone)
            bucket_rows[backbone] = backbone
    for config in configs:
        if config.name not in [c.name for c in configs if c.pretrain.name in args.backbones]:
            continue
        label = f"PAD on {config.pretrain.name}"
        rows.add_stage(label, config.name)
        rows.add_stage(f"{label}: phase 2 alone (alignment expert)", config.align_stage_name)
        rows.add_experts(label, config.name)
        bucket_rows[label] = config.name
    for baseline, label in (("hybrid", "Hybrid"), ("morec", "MoRec")):
        if layout.model_dir(baseline).joinpath("metrics_test.json").exists():
            rows.add_stage(f"{label} ({args.baselines_on} settings)", baseline)
            bucket_rows[label] = baseline
    print("\n".join(rows.lines))
    print_buckets(layout, bucket_rows)

    print("\n## Expert diagnostics")
    for config in configs:
        if layout.model_dir(config.name).joinpath(DIAGNOSTICS_FILE).exists():
            print_diagnostics(f"PAD on {config.pretrain.name}", layout.model_dir(config.name))

    print("\n## Wall time (s; each stage's Ray Train fit incl. start-up, per-epoch validation and export)\n")
    print("| stage | wall s | best epoch |\n|---|---|---|")
    for name, summary in summaries.items():
        for phase in ("pretrain", "align", "experts", "hybrid", "morec"):
            if phase in summary:
                stage = summary[phase].get("stage", phase)
                print(
                    f"| {name}: {phase} ({stage}) | {summary[phase].get('fit_wall_s', '—')} | "
                    f"{summary[phase].get('final_metrics', {}).get('best_epoch', '—')} |"
                )
        walls = [summary[p].get("fit_wall_s") or 0 for p in ("align", "experts") if p in summary]
        print(f"| {name}: phases 2 + 3 | {np.sum(walls):.1f} | |")
    print(f"\nthis invocation: {total:.0f} s (finished stages reused: {preset.run_dir})")


if __name__ == "__main__":
    main()
