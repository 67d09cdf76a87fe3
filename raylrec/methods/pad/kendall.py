"""Kendall's τ discrepancy between two embedding tables (eq. 13, the paper's Figure 6).

For every behaviour → target pair of the training sequences (each target with the items of its input window),
the distance between the two items' embeddings is computed in table A and in table B; Kendall's τ between the
two distance lists says how much of table A's ordering of the pairs table B keeps. Reported per frequency bucket
of the target item (equal training-interaction mass, from the training split only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from scipy.stats import kendalltau

from raylrec.data.prepared import CSR, PreparedData
from raylrec.errors import ArtifactError
from raylrec.eval.buckets import frequency_buckets

EMBEDDINGS_FILE = "item_embeddings.safetensors"
DEFAULT_TABLE = "item_embeddings"


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """(#concordant − #discordant) / #pairs; scipy's τ-b, equal to eq. 13 when there are no ties."""
    return float(kendalltau(a, b).statistic)


def behaviour_target_pairs(history: CSR, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(behaviour items, target items): each item of each row with each of the `window` items before it."""
    positions = np.arange(len(history.indices)) - np.repeat(history.indptr[:-1], history.lengths)
    behaviours, targets = [], []
    for offset in range(1, window + 1):
        at = np.flatnonzero(positions >= offset)
        behaviours.append(history.indices[at - offset])
        targets.append(history.indices[at])
    return np.concatenate(behaviours), np.concatenate(targets)


def pair_distances(
    table: torch.Tensor, behaviours: np.ndarray, targets: np.ndarray, chunk: int = 1 << 18
) -> np.ndarray:
    """Euclidean distance of each (behaviour, target) pair, computed in chunks to bound memory."""
    out = np.empty(len(behaviours), dtype=np.float64)
    for start in range(0, len(behaviours), chunk):
        b = torch.from_numpy(behaviours[start : start + chunk])
        t = torch.from_numpy(targets[start : start + chunk])
        out[start : start + chunk] = (table[b] - table[t]).double().norm(dim=-1).numpy()
    return out


@dataclass
class BucketTau:
    bucket: int
    tau: float
    pairs: int


def kendall_by_bucket(
    table_a: torch.Tensor,
    table_b: torch.Tensor,
    behaviours: np.ndarray,
    targets: np.ndarray,
    item_buckets: np.ndarray,
    num_buckets: int,
    max_pairs: int | None,
    seed: int = 0,
) -> list[BucketTau]:
    """τ per target bucket; buckets with more than `max_pairs` pairs use a seeded random subset of them."""
    rng = np.random.default_rng(seed)
    target_buckets = item_buckets[targets]
    rows = []
    for bucket in range(num_buckets):
        chosen = np.flatnonzero(target_buckets == bucket)
        if max_pairs is not None and len(chosen) > max_pairs:
            chosen = np.sort(rng.choice(chosen, size=max_pairs, replace=False))
        if len(chosen) < 2:
            rows.append(BucketTau(bucket, float("nan"), len(chosen)))
            continue
        a = pair_distances(table_a, behaviours[chosen], targets[chosen])
        b = pair_distances(table_b, behaviours[chosen], targets[chosen])
        rows.append(BucketTau(bucket, kendall_tau(a, b), len(chosen)))
    return rows


def load_table(stage: Path, name: str | None) -> tuple[torch.Tensor, str]:
    """An exported embedding table of a stage; without a name, the stage's only or default table."""
    path = stage / EMBEDDINGS_FILE
    if not path.exists():
        raise ArtifactError(f"no {EMBEDDINGS_FILE} in {stage}: give a trained stage folder (models/<name>)")
    tables = load_file(str(path))
    name = name or (DEFAULT_TABLE if DEFAULT_TABLE in tables else next(iter(tables)) if len(tables) == 1 else None)
    if name not in tables:
        raise ArtifactError(f"{path} has tables {', '.join(sorted(tables))}; choose one with --table-a/--table-b")
    return tables[name], name


def stage_data_dir(stage: Path) -> Path:
    """The prepared dataset a stage was evaluated on: <run_dir>/data/<dataset> of its metrics file."""
    metrics = stage / "metrics_valid.json"
    if not metrics.exists():
        raise ArtifactError(f"{metrics} is missing; give --data-dir")
    return stage.parent.parent / "data" / json.loads(metrics.read_text())["dataset"]


def stage_window(stage: Path) -> int | None:
    config = stage / "model_config.json"
    if not config.exists():
        return None
    saved = json.loads(config.read_text())
    return saved.get("max_len") or saved.get("model", {}).get("max_len")


def plot_taus(series: dict[str, list[BucketTau]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    for label, rows in series.items():
        axes.plot([r.bucket for r in rows], [r.tau for r in rows], marker="o", label=label)
    axes.set_xlabel("target item frequency bucket (0 = rarest, equal training mass)")
    axes.set_ylabel("Kendall's τ of pair distances")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def analyze_kendall(
    stage_a: Path,
    stage_b: Path,
    table_a: str | None = None,
    table_b: str | None = None,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    window: int | None = None,
    num_buckets: int = 10,
    max_pairs: int | None = 200_000,
    seed: int = 0,
) -> dict:
    """τ per bucket between a table of stage A and one of stage B; writes a CSV and a PNG."""
    a, name_a = load_table(stage_a, table_a)
    b, name_b = load_table(stage_b, table_b)
    if len(a) != len(b):
        raise ArtifactError(f"{stage_a} has {len(a) - 1} items, {stage_b} {len(b) - 1}: not the same dataset")
    data = PreparedData(data_dir or stage_data_dir(stage_a))
    if data.num_items + 1 != len(a):
        raise ArtifactError(f"{data.root} has {data.num_items} items, the tables {len(a) - 1}")
    window = window or stage_window(stage_a) or stage_window(stage_b)
    if window is None:
        raise ArtifactError("neither stage records its window length (model_config.json); give --window")
    behaviours, targets = behaviour_target_pairs(data.history("train"), window)
    buckets = frequency_buckets(data.item_train_counts(), num_buckets)
    rows = kendall_by_bucket(a, b, behaviours, targets, buckets, num_buckets, max_pairs, seed)
    label = f"{stage_a.name}:{name_a} vs {stage_b.name}:{name_b}"
    out_dir = out_dir or stage_a.parent.parent / "analysis"
    stem = f"kendall_{stage_a.name}-{name_a}_vs_{stage_b.name}-{name_b}"
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / f"{stem}.csv"
    csv.write_text("bucket,tau,pairs\n" + "".join(f"{r.bucket},{r.tau:.6f},{r.pairs}\n" for r in rows))
    png = out_dir / f"{stem}.png"
    plot_taus({label: rows}, png)
    return {"label": label, "rows": rows, "csv": csv, "png": png, "window": window}
