"""Turn a raw interaction log (and item texts) into the canonical prepared dataset.

Heavy row-level steps (filtering, per-user ordering and de-duplication, k-core, grouping into
sequences) run on Ray Data so large logs shard over the cluster; the per-user steps after grouping,
the id maps, the split and the negatives run on the driver over one row per user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray
from tqdm import tqdm

from pydantic import field_validator

from raylrec.config import StrictModel
from raylrec.data.fetch import fetch_dataset, file_sha256
from raylrec.data.readers import ColumnMapping, read_interactions, read_items
from raylrec.data.report import DataReport
from raylrec.errors import DataError
from raylrec.ray_utils import ensure_ray

log = logging.getLogger(__name__)

LEAVE_ONE_OUT_MIN = 3  # train ≥ 1 item, then the validation and the test target


class DataConfig(StrictModel):
    dataset: str = "ml-100k"  # a fetchable dataset name, or your own name when paths are given
    interactions_path: str | None = None
    items_path: str | None = None
    format: str = "auto"
    columns: dict[str, str | None] | None = None  # ColumnMapping fields for csv/tsv/parquet
    delimiter: str | None = None
    min_rating: float | None = None  # keep interactions with rating >= this
    deduplicate: bool = True  # keep a user's first interaction with an item
    user_core: int = 0  # iterative k-core: users and items with fewer interactions are removed
    item_core: int = 0
    max_history: int | None = None  # keep only each user's most recent N interactions
    negatives: list[int] = [19, 100]  # sampled-evaluation candidate sets drawn once and stored
    seed: int = 2020
    num_blocks: int = 8  # Ray Data parallelism of the row-level steps

    @field_validator("columns")
    @classmethod
    def _columns_are_fields(cls, columns: dict[str, str | None] | None) -> dict[str, str | None] | None:
        known = [f.name for f in dataclasses.fields(ColumnMapping)]
        unknown = sorted(set(columns or {}) - set(known))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}; data.columns maps "
                             f"{', '.join(known)} to the file's column names")
        return columns


def natural_order(raw_ids: pd.Series) -> pd.Series:
    """Raw ids sorted numerically when they are all integers, else lexicographically."""
    unique = pd.Series(raw_ids.unique())
    # As float with NaN for non-numbers: on Arrow-backed strings (what Ray Data hands back) to_numeric gives
    # NaN that notna() counts as a value, which used to keep the blocks' arrival order (run-dependent ids).
    numeric = pd.to_numeric(unique, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if np.isfinite(numeric).all():
        return unique.iloc[np.argsort(numeric, kind="stable")].reset_index(drop=True)
    return unique.sort_values(kind="stable").reset_index(drop=True)


def sort_and_deduplicate(group: pd.DataFrame, deduplicate: bool) -> pd.DataFrame:
    """One user's rows in time order (file order breaks timestamp ties), optionally first occurrences only."""
    group = group.sort_values(["timestamp", "row"] if group["timestamp"].notna().all() else ["row"], kind="stable")
    if deduplicate:
        group = group.drop_duplicates("item_id", keep="first")
    return group


def to_sequence(group: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [group["user_id"].iloc[0]],
        "items": [group["item_id"].tolist()],
        "timestamps": [group["timestamp"].tolist()],
        "ratings": [group["rating"].tolist()],
    })


def keep_members(batch: pa.Table, column: str, allowed: pa.Array) -> pa.Table:
    return batch.filter(pc.is_in(batch[column], value_set=allowed))


def k_core(ds: ray.data.Dataset, config: DataConfig, report: DataReport) -> ray.data.Dataset:
    """Iteratively drop users and items below their minimum count until none remain."""
    round_index = 0
    while config.user_core > 1 or config.item_core > 1:
        round_index += 1
        rows_in = ds.count()
        user_counts = ds.groupby("user_id", num_partitions=config.num_blocks).count().to_pandas()
        item_counts = ds.groupby("item_id", num_partitions=config.num_blocks).count().to_pandas()
        good_users = user_counts.loc[user_counts["count()"] >= config.user_core, "user_id"]
        good_items = item_counts.loc[item_counts["count()"] >= config.item_core, "item_id"]
        if len(good_users) == len(user_counts) and len(good_items) == len(item_counts):
            break
        ds = ds.map_batches(keep_members, fn_args=("user_id", pa.array(good_users)), batch_format="pyarrow")
        after_users = ds.materialize().count()
        ds = ds.map_batches(keep_members, fn_args=("item_id", pa.array(good_items)), batch_format="pyarrow")
        ds = ds.materialize()
        rows_out = ds.count()
        report.record(f"k-core round {round_index}", rows_in, rows_out, {
            f"user has fewer than {config.user_core} interactions": rows_in - after_users,
            f"item has fewer than {config.item_core} interactions": after_users - rows_out,
        })
    return ds


def draw_negatives(sequences: list[np.ndarray], num_items: int, count: int, rng: np.random.Generator,
                   user_ids: list[str]) -> np.ndarray:
    """`count` distinct items per user that the user never interacted with, by rejection sampling."""
    out = np.empty((len(sequences), count), dtype=np.int32)
    for u, seen in enumerate(tqdm(sequences, desc=f"negatives ({count} per user)", unit="user", leave=False)):
        if num_items - len(np.unique(seen)) < count:
            raise DataError(f"user {user_ids[u]!r} interacted with {len(seen)} of {num_items} items: "
                            f"cannot draw {count} unseen negatives; lower `negatives`")
        picked: list[int] = []
        while len(picked) < count:
            draw = rng.integers(1, num_items + 1, size=2 * count)
            draw = draw[~np.isin(draw, seen)]
            picked.extend(x for x in dict.fromkeys(draw.tolist()) if x not in set(picked))
        out[u] = picked[:count]
    return out


def prepare_dataset(config: DataConfig, out_dir: Path, cache_root: Path | None = None) -> dict:
    """Run every preparation step and write the prepared dataset to `out_dir`; returns the data report."""
    if config.interactions_path:
        interactions_path = Path(config.interactions_path)
        items_path = Path(config.items_path) if config.items_path else None
        file_format = config.format
    else:
        raw = fetch_dataset(config.dataset, cache_root)
        interactions_path, items_path, file_format = raw.interactions_path, raw.items_path, raw.format
    mapping = ColumnMapping(**config.columns) if config.columns else None
    table = read_interactions(interactions_path, format=file_format, columns=mapping, delimiter=config.delimiter)
    items = (read_items(items_path, format=file_format, delimiter=config.delimiter).to_pandas()
             if items_path else None)

    if items is not None:
        check_items_agree(table, items, interactions_path, items_path)
    report = DataReport(config.dataset)
    report.record("read", table.num_rows, table.num_rows)
    ensure_ray()
    if not table["timestamp"].null_count == 0:
        report.notes.append(f"{interactions_path.name} has no timestamps: file order is the time order")
    ds = ray.data.from_arrow(table).repartition(config.num_blocks)

    if config.min_rating is not None:
        rows_in = ds.count()
        has_rating = ds.filter(expr="rating is not null").count() if table["rating"].null_count else rows_in
        threshold = config.min_rating
        ds = ds.map_batches(lambda b: b.filter(pc.greater_equal(b["rating"], threshold)), batch_format="pyarrow")
        ds = ds.materialize()
        report.record("rating filter", rows_in, ds.count(), {
            "rating missing": rows_in - has_rating,
            f"rating below {threshold}": has_rating - ds.count(),
        })

    rows_in = ds.count()
    by_user = ds.groupby("user_id", num_partitions=config.num_blocks)
    ds = by_user.map_groups(sort_and_deduplicate, fn_args=(config.deduplicate,), batch_format="pandas").materialize()
    report.record("order by time" + (" and de-duplicate" if config.deduplicate else ""), rows_in, ds.count(),
                  {"repeated (user, item) pair, first kept": rows_in - ds.count()})

    ds = k_core(ds, config, report)
    by_user = ds.groupby("user_id", num_partitions=config.num_blocks)
    sequences = by_user.map_groups(to_sequence, batch_format="pandas").to_pandas()
    sequences = finish_sequences(sequences, config, report)
    return write_prepared(sequences, items, config, report, out_dir,
                          [p for p in (interactions_path, items_path) if p])


def finish_sequences(sequences: pd.DataFrame, config: DataConfig, report: DataReport) -> pd.DataFrame:
    """Per-user steps on one row per user: history cap, then the leave-one-out minimum."""
    lengths = sequences["items"].map(len)
    if config.max_history is not None:
        rows_in = int(lengths.sum())
        for column in ("items", "timestamps", "ratings"):
            sequences[column] = sequences[column].map(lambda values: values[-config.max_history:])
        lengths = sequences["items"].map(len)
        report.record(f"keep last {config.max_history} per user", rows_in, int(lengths.sum()),
                      {f"older than the user's last {config.max_history}": rows_in - int(lengths.sum())})
    rows_in = int(lengths.sum())
    short = lengths < LEAVE_ONE_OUT_MIN
    sequences = sequences.loc[~short].reset_index(drop=True)
    report.record("leave-one-out minimum", rows_in, rows_in - int(lengths[short].sum()),
                  {f"user has fewer than {LEAVE_ONE_OUT_MIN} interactions ({int(short.sum())} users)":
                   int(lengths[short].sum())})
    return sequences


def write_prepared(sequences: pd.DataFrame, items: pd.DataFrame | None, config: DataConfig, report: DataReport,
                   out_dir: Path, raw_files: list[Path]) -> dict:
    user_ids = natural_order(sequences["user_id"])
    flat = sequences.explode(["items", "timestamps", "ratings"])
    item_ids = natural_order(flat["items"])
    item_index = pd.Series(np.arange(1, len(item_ids) + 1), index=item_ids.to_numpy())
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids.to_numpy())

    sequences = sequences.assign(user=sequences["user_id"].map(user_index)).sort_values("user")
    item_sequences = [item_index.loc[s].to_numpy(dtype=np.int32) for s in sequences["items"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user": sequences["user"].to_numpy(np.int32), "items": item_sequences}).to_parquet(
        out_dir / "sequences.parquet", index=False)
    interactions = pd.DataFrame({
        "user": np.repeat(sequences["user"].to_numpy(np.int32), [len(s) for s in item_sequences]),
        "item": np.concatenate(item_sequences),
        "timestamp": pd.array(np.concatenate([np.asarray(t, dtype=object) for t in sequences["timestamps"]]),
                              dtype="Int64"),
        "rating": np.concatenate([np.asarray(r, dtype=np.float64) for r in sequences["ratings"]]),
        "position": np.concatenate([np.arange(len(s), dtype=np.int32) for s in item_sequences]),
    })
    interactions.to_parquet(out_dir / "interactions.parquet", index=False)
    pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int32), "user_id": user_ids}).to_parquet(
        out_dir / "users.parquet", index=False)
    item_table = build_item_table(item_ids, items, report)
    item_table.to_parquet(out_dir / "items.parquet", index=False)

    negatives = []
    for split_index, split in enumerate(("valid", "test")):
        for count in config.negatives:
            rng = np.random.default_rng([config.seed, split_index, count])
            drawn = draw_negatives(item_sequences, len(item_ids), count, rng, list(sequences["user_id"]))
            negatives.append(pd.DataFrame({"user": sequences["user"].to_numpy(np.int32), "split": split,
                                           "num_negatives": count, "items": list(drawn)}))
    pd.concat(negatives).to_parquet(out_dir / "negatives.parquet", index=False)

    fingerprint = data_fingerprint(config, raw_files)
    lengths = np.array([len(s) for s in item_sequences])
    counts = {"users": len(user_ids), "items": len(item_ids), "interactions": int(lengths.sum()),
              "train_interactions": int((lengths - 2).sum()),
              "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                  "max": int(lengths.max())}}
    return report.write(out_dir / "data_report.json", counts=counts, fingerprint=fingerprint,
                        config=config.model_dump(mode="json"), raw_files=[str(p) for p in raw_files])


def data_fingerprint(config: DataConfig, raw_files: list[Path]) -> str:
    """What the prepared data is a function of: the raw files' contents and the preparation settings."""
    return hashlib.sha256(json.dumps({
        "files": {p.name: file_sha256(p) for p in raw_files},
        "config": config.model_dump(mode="json"),
    }, sort_keys=True).encode()).hexdigest()[:16]


def user_raw_files(config: DataConfig) -> list[Path]:
    """The raw files a config names itself (a fetched dataset's files are pinned by their checksums instead)."""
    return [Path(p) for p in (config.interactions_path, config.items_path) if p]


def check_items_agree(table: pa.Table, items: pd.DataFrame, interactions_path: Path, items_path: Path) -> None:
    """The items file must cover every item the interactions name (the reader rejects duplicate ids)."""
    unknown = pc.invert(pc.is_in(table["item_id"], value_set=pa.array(items["item_id"])))
    missing = table.filter(unknown)
    if missing.num_rows:
        raise DataError(f"{interactions_path.name} line {missing['row'][0].as_py()}: field 'item_id' value "
                        f"{missing['item_id'][0].as_py()!r} is not in {items_path.name} "
                        f"({missing.num_rows} interactions name unknown items); the two files disagree")


def build_item_table(item_ids: pd.Series, items: pd.DataFrame | None, report: DataReport) -> pd.DataFrame:
    """Item index → raw id and text fields; interactions naming an item absent from the items file are an error."""
    table = pd.DataFrame({"item": np.arange(1, len(item_ids) + 1, dtype=np.int32), "item_id": item_ids})
    if items is None:
        return table
    unused = int((~items["item_id"].isin(item_ids)).sum())
    if unused:
        report.notes.append(f"{unused} items of the items file have no remaining interactions and are not used")
    return table.merge(items.drop(columns=[c for c in ("row",) if c in items]), on="item_id", how="left")
