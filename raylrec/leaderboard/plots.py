"""Leaderboard figures (matplotlib, headless): metric bars with error bars, warm/median/cold grouped bars,
and sweep sensitivity curves (the papers' figures for λ, γ, α/β and the prompt length)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PARAM_LABELS = {
    "align.gamma": "γ (alignment loss weight)",
    "experts.num_buckets": "B (frequency buckets)",
    "align.loss.kernel": "alignment kernel",
    "align.loss.bandwidth_exponents": "MMD bandwidth exponents",
    "stage1.alpha": "α (item reconstruction)",
    "stage1.beta": "β (text reconstruction)",
    "mmd.weight": "λ (MMD weight)",
    "mmd.rho": "ρ (MMD bandwidth)",
    "adapter.prompt_length": "L' (prompt length)",
    "train.lr": "learning rate",
    "model.dropout": "dropout",
    "model.hidden_size": "hidden size",
}


def _errors(frame: pd.DataFrame, column: str) -> np.ndarray:
    return frame[f"{column}_std"].fillna(0.0).to_numpy()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_metric_bars(frame: pd.DataFrame, path: Path, metrics: tuple[str, ...] = ("hr@10", "ndcg@10")) -> Path:
    """One panel per metric: a bar per method (mean over runs), error bar = std over seeds."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 + 0.6 * len(frame) * len(metrics), 4), squeeze=False)
    labels = [f"{m}\n[{d}]" if frame["dataset"].nunique() > 1 else m for m, d in zip(frame["method"], frame["dataset"])]
    for ax, metric in zip(axes[0], metrics):
        x = np.arange(len(frame))
        ax.bar(x, frame[metric].fillna(0).to_numpy(), yerr=_errors(frame, metric), capsize=3, color="tab:blue")
        ax.set_xticks(x, labels, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{metric.upper()} (test, full ranking)")
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_warm_cold(frame: pd.DataFrame, path: Path, metric: str = "ndcg@10") -> Path:
    """NDCG@10 per target-item popularity group, one bar per method in each group."""
    buckets = ("warm", "median", "cold")
    fig, ax = plt.subplots(figsize=(5 + 0.5 * len(frame), 4))
    width = 0.8 / max(len(frame), 1)
    x = np.arange(len(buckets))
    for i, (_, row) in enumerate(frame.iterrows()):
        means = [row.get(f"{b}_{metric}", math.nan) for b in buckets]
        errors = [0.0 if pd.isna(row.get(f"{b}_{metric}_std")) else row[f"{b}_{metric}_std"] for b in buckets]
        ax.bar(
            x + (i - (len(frame) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=errors,
            capsize=2,
            label=row["method"],
        )
    ax.set_xticks(x, buckets)
    ax.set_ylabel(f"{metric.upper()} (test)")
    ax.set_title("Warm / median / cold target items")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _value(raw):
    if isinstance(raw, str) and raw[:1] in "[{":
        return json.dumps(json.loads(raw))
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return "None"  # a null in the space, e.g. IDLE's ρ = median heuristic
    return raw


def sensitivity(rows: pd.DataFrame, param: str, metric: str, mode: str) -> pd.DataFrame:
    """Metric against one parameter, the others held at the best trial's values (the papers' figures);
    when the search did not try every value at those settings (random search), the best over the others."""
    columns = [c for c in rows.columns if c.startswith("param:")]
    others = [c for c in columns if c != f"param:{param}"]
    best = rows.sort_values(metric, ascending=mode == "min").iloc[0]
    held = rows
    for column in others:
        held = held[held[column].map(_value) == _value(best[column])]
    source = held if held[f"param:{param}"].map(_value).nunique() >= 2 else rows
    grouped = source.groupby(source[f"param:{param}"].map(_value))[metric]
    return (grouped.max() if mode == "max" else grouped.min()).reset_index()


def plot_sweep(sweep_dir: Path, path: Path) -> Path | None:
    """One panel per swept parameter: best validation metric against its value."""
    results = sweep_dir / "sweep_results.csv"
    rows = pd.read_csv(results)
    spec_file = sweep_dir / "sweep.yaml"
    metric, mode = "valid_ndcg@10", "max"
    if spec_file.exists():
        import yaml

        spec = yaml.safe_load(spec_file.read_text()) or {}
        metric, mode = spec.get("metric", metric), spec.get("mode", mode)
    if metric not in rows:
        return None
    rows = rows[rows["status"].isin(["COMPLETED", "EARLY_STOPPED"]) & rows[metric].notna()]
    params = [c.removeprefix("param:") for c in rows.columns if c.startswith("param:")]
    if rows.empty or not params:
        return None
    fig, axes = plt.subplots(1, len(params), figsize=(4 * len(params), 3.5), squeeze=False)
    for ax, param in zip(axes[0], params):
        curve = sensitivity(rows, param, metric, mode)
        xs = curve[f"param:{param}"]
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in xs)
        if numeric:
            curve = curve.astype({f"param:{param}": float}).sort_values(f"param:{param}")
            ax.plot(curve[f"param:{param}"], curve[metric], marker="o")
            if param.endswith("lr") and (curve[f"param:{param}"] > 0).all():
                ax.set_xscale("log")
        else:
            ax.plot(range(len(curve)), curve[metric], marker="o")
            ax.set_xticks(range(len(curve)), [str(v) for v in xs], rotation=30, ha="right", fontsize=7)
        ax.set_xlabel(PARAM_LABELS.get(param, param))
        ax.set_ylabel(f"{metric} (best)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Sweep {sweep_dir.name}: {metric} vs each parameter (others at the best trial's values)", fontsize=9)
    return _save(fig, path)
