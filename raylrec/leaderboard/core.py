"""Aggregate metrics JSONs (raylrec/eval/evaluator.py `write_metrics`) into one leaderboard.

Sources, found under each RUN_DIR (symlinks are not followed, so shared artifacts count once):
  models/<stage>/metrics_test.json                 one run of a model or method variant
  sweeps/<sweep>/seeds/seed-<s>/models/<stage>/    the tuned configuration's seed re-runs: "<Method> (tuned)"
  sweeps/<sweep>/trials/...                        skipped: trials are judged on validation only
Runs with the same row label (the same stage name across run directories, or a sweep's seeds) and the same
config (up to seeds, paths and placement) are one row, reported as mean ± std (sample std) over those runs;
same-label runs from different configs are separate rows, their labels suffixed with a short config hash.
Stage folders moved aside by `--force` (`<stage>.old-<time>`) are not read. Rows are grouped by dataset
fingerprint: numbers on different splits are never compared.

Methods evaluated on the stored candidates only, for a sample of users (A-LLMRec's `<name>-eval/
metrics_test_<variant>.json`, with its backbone scored on the same users in `metrics_test_backbone.json`),
go to a second table, "candidate protocol", grouped by the number of evaluated users: their numbers are
not comparable with full-ranking rows.

Columns: HR/NDCG@{5,10,20} full ranking; Hit@1 and NDCG@5 over the stored candidate set (1 positive +
19 negatives, as A-LLMRec; the smallest stored set when 19 is absent); NDCG@10 and HR@10 for warm / median /
cold target items; relative improvement over SASRec (the papers' "Improv."); Ray Train fit wall time;
trainable parameters; the config that produced the row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raylrec.errors import RaylrecError
from raylrec.eval.compare import RAREST
from raylrec.leaderboard.significance import row_values, significance_columns, significance_table
from raylrec.methods.registry import display_names, training_only_suffixes
from raylrec.storage import RunStore

FULL_METRICS = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20"]
CANDIDATE_METRICS = ["cand_hit@1", "cand_ndcg@5"]
BUCKET_METRICS = [f"{b}_{m}" for m in ("ndcg@10", "hr@10") for b in ("warm", "median", "cold")]
METRICS = FULL_METRICS + CANDIDATE_METRICS + BUCKET_METRICS
HEADERS = {
    **{m: m.upper().replace("NDCG", "NDCG").replace("HR", "HR") for m in FULL_METRICS},
    "cand_hit@1": "Hit@1 (cand)",
    "cand_ndcg@5": "NDCG@5 (cand)",
    **{f"{b}_{m}": f"{m.upper()} {b}" for m in ("ndcg@10", "hr@10") for b in ("warm", "median", "cold")},
}
CANDIDATE_TABLE = [
    "gen_hit@1",
    "cand_hit@1",
    "cand_hr@5",
    "cand_ndcg@5",
    "cand_ndcg@10",
    "warm_gen_hit@1",
    "cold_gen_hit@1",
    "warm_cand_ndcg@5",
    "cold_cand_ndcg@5",
]
METRICS += [m for m in CANDIDATE_TABLE if m not in METRICS]
VARIANTS = {"e": "", "q": " (SBERT)", "q_cold": " (SBERT for cold items)"}
BASELINE_PREFERENCE = ("SASRec", "SASRec (tuned)", "SASRec (BCE)")
IMPROV_METRIC = "ndcg@10"


def display_name(model: str) -> str:
    """A stage's row label, as its method registered it (raylrec/methods/registry.py); else the stage name."""
    return display_names().get(model, model)


@dataclass
class Record:
    """One evaluated run of one model/variant on the test split."""

    label: str
    model: str
    dataset: str
    fingerprint: str
    stage_dir: Path
    values: dict[str, float]
    candidates: int | None
    config: dict
    params: int | None
    wall_s: float | None
    tuned_params: dict = field(default_factory=dict)
    protocol: str = "full"  # full: the whole split, full ranking; candidates: stored candidates, a user sample
    users: int | None = None
    role: str = "method"  # id_model: compared against by every other row (the strongest one of its table)
    backbone: str | None = None  # the stage name of the ID model a method builds on
    # What the stage flagged about itself (e.g. A-LLMRec's collapsed projected tokens): shown in its row
    warnings: list[str] = field(default_factory=list)

    @property
    def config_key(self) -> str:
        """The config that produced the run, up to seeds, placement and paths: runs averaged into one row share it."""
        return hashlib.sha256(json.dumps(comparable(self.config), sort_keys=True, default=str).encode()).hexdigest()[:6]


def comparable(value):
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items() if k not in NOT_CONFIG}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, str) and (value.startswith("/") or "://" in value):
        return Path(value.split("://")[-1]).name  # a path: which stage, not where its run directory is
    return value


MOVED_ASIDE = re.compile(r"\.old-\d{8}-\d{6}$")  # an earlier run of a stage, kept by --force
# Config keys that differ between runs meant to be averaged (seeds) or that only say where and on what a run went.
NOT_CONFIG = {"seed", "run_dir", "name", "cpus_per_worker", "threads_per_worker", "use_gpu", "max_failures"}


def metric_files(root: Path) -> list[Path]:
    found = []
    training_only = training_only_suffixes()  # stages whose metrics are no comparable evaluation (the registry's)
    for directory, subdirs, files in os.walk(root):  # does not follow symlinks
        if directory.endswith(training_only) or MOVED_ASIDE.search(Path(directory).name):
            subdirs[:] = []
            continue
        parts = Path(directory).relative_to(root).parts
        subdirs[:] = [
            d
            for d in subdirs
            if d not in ("train", "tune", "seeds-tune", "data", "embeddings")
            and not (d == "trials" and "sweeps" in parts)
        ]
        found += [
            Path(directory) / f
            for f in files
            if f == "metrics_test.json" or (f.startswith("metrics_test_") and f.endswith(".json"))
        ]
    return sorted(found)


def candidate_protocol(metrics: dict) -> tuple[str | None, int | None]:
    sampled = sorted((int(k.split("_")[1]), k) for k in metrics if k.startswith("sampled_"))
    if not sampled:
        return None, None
    chosen = next((s for s in sampled if s[0] == 19), sampled[0])
    return chosen[1], chosen[0] + 1


def candidate_values(metrics: dict) -> tuple[dict[str, float], int | None, int | None]:
    """A candidate-only record: ranking metrics over the stored candidates, generation Hit@1, their buckets."""
    values: dict[str, float] = {}
    protocol, count = candidate_protocol(metrics)
    sampled = metrics.get(protocol, {}) if protocol else {}
    for key in ("hr@1", "hr@5", "ndcg@5", "ndcg@10"):
        if key in sampled:
            values["cand_hit@1" if key == "hr@1" else f"cand_{key}"] = sampled[key]
    warm_cold = metrics.get("buckets", {}).get("warm_cold", {})
    for bucket in ("warm", "cold"):
        if "ndcg@5" in warm_cold.get(bucket, {}):
            values[f"{bucket}_cand_ndcg@5"] = warm_cold[bucket]["ndcg@5"]
    generation = metrics.get("generation", {})
    for name, key in (("all", "gen_hit@1"), ("warm", "warm_gen_hit@1"), ("cold", "cold_gen_hit@1")):
        if generation.get(name, {}).get("hit@1") is not None:
            values[key] = generation[name]["hit@1"]
    return values, count, sampled.get("n")


def record_values(metrics: dict) -> tuple[dict[str, float], int | None]:
    full = metrics.get("full", {})
    values = {m: full[m] for m in FULL_METRICS if m in full}
    protocol, count = candidate_protocol(metrics)
    if protocol:
        sampled = metrics[protocol]
        if "hr@1" in sampled:
            values["cand_hit@1"] = sampled["hr@1"]
        if "ndcg@5" in sampled:
            values["cand_ndcg@5"] = sampled["ndcg@5"]
    warm_cold = metrics.get("buckets", {}).get("warm_cold", {})
    for bucket in ("warm", "median", "cold"):
        for metric in ("ndcg@10", "hr@10"):
            if metric in warm_cold.get(bucket, {}):
                values[f"{bucket}_{metric}"] = warm_cold[bucket][metric]
    for bucket, bucket_metrics in metrics.get("buckets", {}).get("frequency", {}).items():
        if "ndcg@10" in bucket_metrics:
            values[f"freq{bucket}_ndcg@10"] = bucket_metrics["ndcg@10"]
    return values, count


def sweep_of(path: Path) -> tuple[str, Path] | None:
    """(sweep name, sweep dir) when `path` lies in a sweep's seed re-runs."""
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i] == "sweeps" and i + 2 < len(parts) and parts[i + 2] == "seeds":
            return parts[i + 1], Path(*parts[: i + 2])
    return None


def read_record(path: Path) -> Record:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RaylrecError(f"{path}: unreadable metrics file ({err})") from err
    stage_dir = path.parent
    model = record.get("model") or stage_dir.name
    label, tuned = display_name(model), {}
    metrics = record.get("metrics", {})
    protocol, users = "full", None
    if "full" in metrics:
        values, count = record_values(metrics)
    else:
        protocol = "candidates"
        values, count, users = candidate_values(metrics)
        base, _, variant = model.partition("[")
        variant = variant.rstrip("]")
        if path.stem.endswith("_backbone"):
            label = f"{display_name(model)} (same users)"
        elif variant:  # A-LLMRec's stage 2 (`<name>-stage2[<variant>]`) is the method itself
            label = display_name(base.removesuffix("-stage2")) + VARIANTS.get(variant, f" [{variant}]")
    sweep = sweep_of(path)
    if sweep:
        name, sweep_dir = sweep
        method = model.partition("[")[0]
        label = (
            f"{label} (tuned)"
            if name in (method, stage_dir.name) or stage_dir.name.startswith(f"{name}-")
            else f"{label} (tuned: {name})"
        )
        best = sweep_dir / "best.json"
        if best.exists():
            tuned = json.loads(best.read_text()).get("best_params", {})
    done = stage_dir / "DONE.json"
    wall = None
    if done.exists():
        try:
            wall = json.loads(done.read_text()).get("fit_wall_s")
        except json.JSONDecodeError:
            wall = None
    return Record(
        label=label,
        model=model,
        dataset=str(record.get("dataset") or "?"),
        fingerprint=str(record.get("data_fingerprint") or "?"),
        stage_dir=stage_dir,
        values=values,
        candidates=count,
        config=record.get("config") or {},
        params=record.get("trainable_params"),
        wall_s=wall,
        tuned_params=tuned,
        protocol=protocol,
        users=users,
        role=str(record.get("role") or "method"),
        backbone=record.get("backbone"),
        warnings=[str(w) for w in record.get("warnings") or []],
    )


def collect_records(run_dirs: list[str | Path]) -> list[Record]:
    records = []
    for run_dir in run_dirs:
        root = Path(run_dir)
        if not root.is_dir():
            raise RaylrecError(f"{root} is not a directory")
        records += [read_record(path) for path in metric_files(root)]
    if not records:
        raise RaylrecError(
            f"no metrics_test.json under {', '.join(map(str, run_dirs))}: run `raylrec run`, "
            "`raylrec train` or `raylrec tune` first"
        )
    return records


def choose_baseline(labels: list[str], baseline: str | None) -> str | None:
    if baseline:
        wanted = display_name(baseline)
        return wanted if wanted in labels else None
    return next((label for label in BASELINE_PREFERENCE if label in labels), None)


def frequency_metrics(group: list[Record]) -> list[str]:
    """NDCG@10 per equal-mass target-frequency bucket (0 = rarest), in bucket order."""
    names = {m for r in group for m in r.values if m.startswith("freq")}
    return sorted(names, key=lambda m: int(m[len("freq") :].partition("_")[0]))


def leaderboard_frame(records: list[Record], baseline: str | None = None, num_buckets: int = 10) -> pd.DataFrame:
    """One row per (dataset, label): n, mean and std of every metric, improvement over the baseline row, and
    paired intervals of NDCG@10 against the strongest ID model and the row's own backbone (significance.py)."""
    rows, run_lists = [], []
    groups: dict[tuple, list[Record]] = {}
    for record in records:
        groups.setdefault(
            (record.fingerprint, record.protocol, record.users, record.label, record.config_key), []
        ).append(record)
    configs_per_label: dict[tuple, int] = {}
    for fingerprint, protocol, users, label, _ in groups:
        configs_per_label[(fingerprint, protocol, users, label)] = (
            configs_per_label.get((fingerprint, protocol, users, label), 0) + 1
        )
    for (fingerprint, protocol, users, label, config_key), group in groups.items():
        if configs_per_label[(fingerprint, protocol, users, label)] > 1:  # never average different configs
            label = f"{label} [config {config_key}]"
        row: dict = {
            "dataset": group[0].dataset,
            "data_fingerprint": fingerprint,
            "protocol": protocol,
            "users": users,
            "table": f"{fingerprint}|{protocol}|{users}",
            "method": label,
            "model": group[0].model,
            "n": len(group),
            "candidates": group[0].candidates,
        }
        for metric in METRICS + frequency_metrics(group):
            values = [r.values[metric] for r in group if metric in r.values]
            row[metric] = float(np.mean(values)) if values else math.nan
            row[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
        row["role"] = group[0].role
        row["backbone"] = group[0].backbone or ""
        row["backbone_label"] = display_name(group[0].backbone) if group[0].backbone else ""
        row["warnings"] = "; ".join(dict.fromkeys(w for r in group for w in r.warnings))
        walls = [r.wall_s for r in group if r.wall_s is not None]
        row["wall_s"] = float(np.mean(walls)) if walls else math.nan
        row["trainable_params"] = group[0].params
        row["tuned_params"] = json.dumps(group[0].tuned_params) if group[0].tuned_params else ""
        row["config"] = json.dumps(group[0].config, sort_keys=True)
        row["runs"] = ";".join(str(r.stage_dir) for r in group)
        rows.append(row)
        run_lists.append([r.stage_dir for r in group])
    frame = pd.DataFrame(rows)
    improv = []
    for _, part in frame.groupby("table", sort=False):
        labels = part["method"].tolist()
        reference = choose_baseline(labels, baseline) or next((m for m in labels if m.endswith("(same users)")), None)
        for index, row in part.iterrows():
            entry = {"index": index, "baseline": reference or ""}
            for metric in METRICS:
                base = part.loc[part["method"] == reference, metric].iloc[0] if reference else math.nan
                entry[f"improv_{metric}"] = (row[metric] - base) / base * 100 if base and base > 0 else math.nan
            improv.append(entry)
    frame = frame.join(pd.DataFrame(improv).set_index("index"))
    values = {
        index: row_values(runs) if protocol == "full" else None
        for index, (runs, protocol) in enumerate(zip(run_lists, frame["protocol"]))
    }
    significance = significance_columns(frame, values, num_buckets)
    if len(significance):
        frame = frame.join(significance)
    order = {label: i for i, label in enumerate(["SASRec", "GRU4Rec", "SASRec (BCE)"])}
    frame["_order"] = frame["method"].map(lambda m: (order.get(m.split(" (tuned")[0], 9), m))
    frame["_protocol"] = frame["protocol"] != "full"
    return (
        frame.sort_values(["dataset", "_protocol", "_order"])
        .drop(columns=["_order", "_protocol"])
        .reset_index(drop=True)
    )


def fmt(mean: float, std: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.4f} ± {std:.4f}" if not math.isnan(std) else f"{mean:.4f}"


def relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def config_cell(row) -> str:
    if row["tuned_params"]:
        return ", ".join(f"{k}={v}" for k, v in json.loads(row["tuned_params"]).items())
    return f"`{relative(row['runs'].split(';')[0])}`"


def improv_cell(row, metric: str) -> str:
    improv = row[f"improv_{metric}"]
    return "–" if math.isnan(improv) or row["method"] == row["baseline"] else f"{improv:+.1f}%"


def method_cell(row) -> str:
    return f"{row['method']} ⚠" if row.get("warnings") else row["method"]


def warning_lines(part: pd.DataFrame) -> list[str]:
    """The warnings of the table's ⚠ rows, under the table (a result that its own checks flagged is not hidden)."""
    flagged = [f"- ⚠ {row['method']}: {row['warnings']}" for _, row in part.iterrows() if row.get("warnings")]
    return ["", *flagged] if flagged else []


def candidate_table(part: pd.DataFrame) -> str:
    """Methods evaluated on the stored candidates for a user sample (A-LLMRec), beside the backbone on those users."""
    cand = f"{int(part['candidates'].dropna().iloc[0])} cand." if part["candidates"].notna().any() else "cand."
    users = part["users"].dropna()
    reference = part["baseline"].iloc[0] or "—"
    heads = {
        "gen_hit@1": "Hit@1 (generated)",
        "cand_hit@1": f"Hit@1 ({cand})",
        "cand_hr@5": f"HR@5 ({cand})",
        "cand_ndcg@5": f"NDCG@5 ({cand})",
        "cand_ndcg@10": f"NDCG@10 ({cand})",
        "warm_gen_hit@1": "Hit@1 gen. warm",
        "cold_gen_hit@1": "Hit@1 gen. cold",
        "warm_cand_ndcg@5": "NDCG@5 warm",
        "cold_cand_ndcg@5": "NDCG@5 cold",
    }
    columns = ["Method", "n", *heads.values(), f"Improv. NDCG@5 vs {reference}", "params", "config"]
    title = (
        f"### {part['dataset'].iloc[0]} (test split, candidate protocol: "
        f"{int(users.iloc[0]) if len(users) else '?'} users)"
    )
    lines = [title, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in part.iterrows():
        cells = [
            method_cell(row),
            str(row["n"]),
            *[fmt(row[m], row[f"{m}_std"]) for m in heads],
            improv_cell(row, "cand_ndcg@5"),
            "–"
            if row["trainable_params"] is None or pd.isna(row["trainable_params"])
            else f"{int(row['trainable_params']):,}",
            config_cell(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + warning_lines(part))


def markdown_table(frame: pd.DataFrame) -> str:
    """One Markdown table per dataset (and per candidate-protocol user sample)."""
    out = []
    for _, part in frame.groupby("table", sort=False):
        if part["protocol"].iloc[0] != "full":
            out.append(candidate_table(part))
            continue
        dataset = part["dataset"].iloc[0]
        candidates = part["candidates"].dropna()
        cand = f"{int(candidates.iloc[0])} cand." if len(candidates) else "cand."
        reference = part["baseline"].iloc[0] or "—"
        columns = [
            "Method",
            "n",
            *[HEADERS[m] for m in FULL_METRICS],
            f"Hit@1 ({cand})",
            f"NDCG@5 ({cand})",
            "NDCG@10 warm",
            "NDCG@10 median",
            "NDCG@10 cold",
            f"Improv. NDCG@10 vs {reference}",
            "fit wall s",
            "params",
            "config",
        ]
        lines = [f"### {dataset} (test split)", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for _, row in part.iterrows():
            metrics = FULL_METRICS + CANDIDATE_METRICS + ["warm_ndcg@10", "median_ndcg@10", "cold_ndcg@10"]
            cells = [method_cell(row), str(row["n"]), *[fmt(row[m], row[f"{m}_std"]) for m in metrics]]
            cells.append(improv_cell(row, IMPROV_METRIC))
            cells.append("–" if math.isnan(row["wall_s"]) else f"{row['wall_s']:.0f}")
            cells.append(
                "–"
                if row["trainable_params"] is None or pd.isna(row["trainable_params"])
                else f"{int(row['trainable_params']):,}"
            )
            cells.append(config_cell(row))
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines + warning_lines(part)))
        paired = significance_table(part)
        if paired:
            out.append(paired)
    notes = (
        "mean ± sample std over n runs (seeds); full ranking over all items unless marked (cand) = "
        "the stored 1 positive + negatives; warm/median/cold = target item popularity groups; "
        "Improv. = relative change of NDCG@10 over the SASRec row; fit wall s = Ray Train fit time of "
        "the stage; config = the stage folder (stage_config.yaml, metrics JSONs) or the tuned parameters. "
        "Paired differences: mean over test users of the row's NDCG@10 minus the reference's, with a 95 % "
        "paired bootstrap interval (users resampled); ↑/↓ = the interval excludes 0; rarest buckets = users "
        f"whose target is among the least frequent items holding {100 * RAREST // 10} % of the training "
        f"interactions (the rarest {RAREST} of 10 equal-mass buckets)."
    )
    return "\n\n".join(out) + "\n\n" + notes + "\n"


def sweep_dirs(run_dirs: list[str | Path]) -> list[Path]:
    found = []
    for run_dir in run_dirs:
        found += sorted(p.parent for p in Path(run_dir).glob("**/sweeps/*/sweep_results.csv"))
        if (Path(run_dir) / "sweep_results.csv").exists():
            found.append(Path(run_dir))
    return sorted(set(found))


def build_leaderboard(
    run_dirs: list[str | Path], out_dir: str | Path | None = None, baseline: str | None = None, plots: bool = True
) -> dict:
    """Write leaderboard.md, leaderboard.csv and the PNG plots; returns their paths and the Markdown.
    Run directories may be URIs (read through their mirrors); by default the tables go to the first one's
    `leaderboard/` folder."""
    stores = [RunStore(run_dir) for run_dir in run_dirs]
    for store in stores:
        store.pull()
    run_dirs = [store.root for store in stores]
    records = collect_records(run_dirs)
    frame = leaderboard_frame(records, baseline)
    out = Path(out_dir) if out_dir else run_dirs[0] / "leaderboard"
    out.mkdir(parents=True, exist_ok=True)
    markdown = markdown_table(frame)
    (out / "leaderboard.md").write_text("# Leaderboard\n\n" + markdown)
    frame.to_csv(out / "leaderboard.csv", index=False)
    result = {
        "markdown": markdown,
        "md": out / "leaderboard.md",
        "csv": out / "leaderboard.csv",
        "plots": [],
        "frame": frame,
    }
    if plots:
        from raylrec.leaderboard.plots import plot_metric_bars, plot_sweep, plot_warm_cold

        full = frame[frame["protocol"] == "full"]
        if not full.empty:
            result["plots"].append(plot_metric_bars(full, out / "metrics.png"))
            result["plots"].append(plot_warm_cold(full, out / "warm_cold.png"))
        for sweep in sweep_dirs(run_dirs):
            png = plot_sweep(sweep, out / f"sweep_{sweep.name}.png")
            if png:
                result["plots"].append(png)
    if not out_dir:
        stores[0].push(out)
    return result
