"""Turn a raw interaction log (and item texts) into the canonical prepared dataset.

Heavy row-level steps (filtering, per-user ordering and de-duplication, k-core) run on Ray Data so large logs shard
over the cluster. Users are hashed into `num_blocks` partitions and each partition is processed in one vectorised
call (sort, de-duplicate): a Python call per user would cost more than the work itself. The per-user steps after that
(history cap, leave-one-out minimum), the id maps, the split and the negatives run on the driver as array operations
over the flat, ordered rows.
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
import pyarrow.parquet as pq
import ray
from pydantic import field_validator, model_serializer
from tqdm import tqdm

from raylrec.config import StrictModel, differing_settings
from raylrec.data.fetch import RawDataset, fetch_dataset, file_sha256
from raylrec.data.prepared import check_readable
from raylrec.data.readers import (
    ColumnMapping,
    ItemColumnMapping,
    dropped_rows,
    read_interactions,
    read_items,
    row_unit,
    sibling_files,
)
from raylrec.data.report import DataReport
from raylrec.errors import ArtifactError, DataError
from raylrec.ray_utils import ensure_ray
from raylrec.storage import RunLayout

log = logging.getLogger(__name__)

LEAVE_ONE_OUT_MIN = 3  # train ≥ 1 item, then the validation and the test target
PARTITION = "_partition"  # the user's hash partition, a column that exists only during the row-level steps
POSITION = "_position"  # a row's place in its user's time order


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
    # The names of a headerless file's fields, in order (csv, tsv, whitespace: the file then has no header line),
    # e.g. [user_id, item_id] for the SASRec repository's `user item` lines.
    fields: list[str] | None = None
    items_format: str | None = None  # the items file's format when it differs from `format` (e.g. p5 + csv)
    item_columns: dict[str, str | None] | None = None  # ItemColumnMapping fields (item, title) of the items file
    # A JSON object mapping the interactions' raw item ids to the items file's ids (P5's item_id_to_int.json).
    item_ids_path: str | None = None
    # Where named datasets with a local-directory source are read from (a folder per dataset, as published);
    # default $RAYLREC_DATASETS_DIR. Not needed for datasets downloaded from the internet.
    source_dir: str | None = None

    @field_validator("columns")
    @classmethod
    def _columns_are_fields(cls, columns: dict[str, str | None] | None) -> dict[str, str | None] | None:
        known = [f.name for f in dataclasses.fields(ColumnMapping)]
        unknown = sorted(set(columns or {}) - set(known))
        if unknown:
            raise ValueError(
                f"unknown field(s) {', '.join(map(repr, unknown))}; data.columns maps "
                f"{', '.join(known)} to the file's column names"
            )
        return columns

    @model_serializer(mode="wrap")
    def _dump_without_unset_additions(self, handler):
        """Fields added after data was first prepared are left out while at their defaults, so the configs
        saved in existing prepared datasets (and their fingerprints) still match."""
        dumped = handler(self)
        for name in ADDED_FIELDS:
            if name in dumped and getattr(self, name) == type(self).model_fields[name].default:
                del dumped[name]
        return dumped


ADDED_FIELDS = ("fields", "items_format", "item_columns", "item_ids_path", "source_dir")


def natural_order(raw_ids: pd.Series) -> pd.Series:
    """Raw ids sorted numerically when they are all integers, else lexicographically."""
    unique = pd.Series(raw_ids.unique())
    # As float with NaN for non-numbers: on Arrow-backed strings (what Ray Data hands back) to_numeric gives
    # NaN that notna() counts as a value, which used to keep the blocks' arrival order (run-dependent ids).
    numeric = pd.to_numeric(unique, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if np.isfinite(numeric).all():
        return unique.iloc[np.argsort(numeric, kind="stable")].reset_index(drop=True)
    return unique.sort_values(kind="stable").reset_index(drop=True)


def add_partition(batch: pa.Table, num_partitions: int) -> pa.Table:
    """Each row's user partition: a fixed hash of the user id, so all of a user's rows meet in one group."""
    users = batch["user_id"].to_numpy(zero_copy_only=False).astype(object)
    partition = pd.util.hash_array(users) % np.uint64(num_partitions)
    return batch.append_column(PARTITION, pa.array(partition.astype(np.int64)))


def order_users(part: pa.Table, by_timestamp: bool, deduplicate: bool) -> pa.Table:
    """A partition's rows, each user's rows in time order (file order breaks timestamp ties), optionally each
    (user, item) pair's first occurrence only, with each row's place in its user's order in `_position`."""
    keys = [("user_id", "ascending")] + ([("timestamp", "ascending")] if by_timestamp else []) + [("row", "ascending")]
    part = part.take(pc.sort_indices(part, sort_keys=keys)).drop_columns([PARTITION])
    users = pd.Series(part["user_id"].to_numpy(zero_copy_only=False))
    if deduplicate:
        repeated = pd.DataFrame({"user": users, "item": part["item_id"].to_numpy(zero_copy_only=False)}).duplicated()
        part = part.filter(pa.array(~repeated.to_numpy()))
        users = users[~repeated.to_numpy()]
    position = users.groupby(users, sort=False).cumcount().to_numpy(np.int64)
    return part.append_column(POSITION, pa.array(position))


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
        report.record(
            f"k-core round {round_index}",
            rows_in,
            rows_out,
            {
                f"user has fewer than {config.user_core} interactions": rows_in - after_users,
                f"item has fewer than {config.item_core} interactions": after_users - rows_out,
            },
        )
    return ds


def draw_negatives(
    sequences: list[np.ndarray], num_items: int, count: int, rng: np.random.Generator, user_ids: list[str]
) -> np.ndarray:
    """`count` distinct items per user that the user never interacted with, by rejection sampling."""
    out = np.empty((len(sequences), count), dtype=np.int32)
    seen_mask = np.zeros(num_items + 1, dtype=bool)  # the current user's items; a lookup, not a search per draw
    for u, seen in enumerate(tqdm(sequences, desc=f"negatives ({count} per user)", unit="user", leave=False)):
        if num_items - len(seen) < count and num_items - len(np.unique(seen)) < count:
            raise DataError(
                f"user {user_ids[u]!r} interacted with {len(seen)} of {num_items} items: "
                f"cannot draw {count} unseen negatives; lower `negatives`"
            )
        seen_mask[seen] = True
        picked: dict[int, None] = {}  # insertion-ordered set: draws are kept in the order they came
        while len(picked) < count:
            draw = rng.integers(1, num_items + 1, size=2 * count)
            picked.update(dict.fromkeys(draw[~seen_mask[draw]].tolist()))
        seen_mask[seen] = False
        out[u] = list(picked)[:count]
    return out


def prepare_dataset(config: DataConfig, out_dir: Path, cache_root: Path | None = None) -> dict:
    """Run every preparation step and write the prepared dataset to `out_dir`; returns the data report."""
    files, table, items, report = read_inputs(config, cache_root)
    ensure_ray()
    by_timestamp = table["timestamp"].null_count == 0
    ds = ray.data.from_arrow(table).repartition(config.num_blocks)

    if config.min_rating is not None:
        rows_in = ds.count()
        has_rating = ds.filter(expr="rating is not null").count() if table["rating"].null_count else rows_in
        threshold = config.min_rating
        ds = ds.map_batches(lambda b: b.filter(pc.greater_equal(b["rating"], threshold)), batch_format="pyarrow")
        ds = ds.materialize()
        report.record(
            "rating filter",
            rows_in,
            ds.count(),
            {
                "rating missing": rows_in - has_rating,
                f"rating below {threshold}": has_rating - ds.count(),
            },
        )

    rows_in = ds.count()
    partitioned = ds.map_batches(add_partition, fn_args=(config.num_blocks,), batch_format="pyarrow")
    ds = (
        partitioned.groupby(PARTITION, num_partitions=config.num_blocks)
        .map_groups(order_users, fn_args=(by_timestamp, config.deduplicate), batch_format="pyarrow")
        .materialize()
    )
    report.record(
        "order by time" + (" and de-duplicate" if config.deduplicate else ""),
        rows_in,
        ds.count(),
        {"repeated (user, item) pair, first kept": rows_in - ds.count()},
    )

    ds = k_core(ds, config, report)
    rows = finish_rows(pa.concat_tables(ray.get(ds.to_arrow_refs())), config, report)
    return write_prepared(rows, items, config, report, out_dir, files.all_paths)


def read_inputs(
    config: DataConfig, cache_root: Path | None = None
) -> tuple[RawDataset, pa.Table, pd.DataFrame | None, DataReport]:
    """The raw files, the interactions read from them, the item table (checked to cover every item) and the report
    with the read steps recorded."""
    files = raw_files(config, cache_root)
    table = read_interactions(
        files.interactions_path,
        format=files.format,
        columns=files.columns,
        delimiter=config.delimiter,
        fields=config.fields,
    )
    interactions_path, items_path = files.interactions_path, files.items_path
    report = DataReport(config.dataset)
    items = None
    if items_path:
        item_table = read_items(
            items_path,
            format=files.items_format,
            columns=files.item_columns,
            delimiter=config.delimiter if files.items_format == files.format else None,
            id_map=files.item_ids_path,
        )
        items = item_table.to_pandas()
        dropped = dropped_rows(item_table)
        report.record_items(f"read {items_path.name}", len(items) + sum(dropped.values()), len(items), dropped)
        check_items_agree(table, items, interactions_path, items_path)
    report.record("read", table.num_rows, table.num_rows)
    if table["timestamp"].null_count:
        report.notes.append(f"{interactions_path.name} has no timestamps: file order is the time order")
    return files, table, items, report


def raw_files(config: DataConfig, cache_root: Path | None = None) -> RawDataset:
    """The raw files to read: the configured paths, or the named dataset's files fetched into the cache."""
    if not config.interactions_path:
        return fetch_dataset(config.dataset, cache_root, source_dir=config.source_dir)
    path = Path(config.interactions_path)
    return RawDataset(
        name=config.dataset,
        interactions_path=path,
        items_path=Path(config.items_path) if config.items_path else None,
        format=config.format,
        source="configured paths",
        columns=ColumnMapping(**config.columns) if config.columns else None,
        items_format=config.items_format or config.format,
        item_columns=ItemColumnMapping(**config.item_columns) if config.item_columns else None,
        item_ids_path=Path(config.item_ids_path) if config.item_ids_path else None,
        extra_paths=tuple(sibling_files(path, config.format)),
    )


def user_runs(codes: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by user (`codes` non-decreasing): each user's row count, and each row's place in its user."""
    lengths = np.bincount(codes, minlength=num_users)
    starts = np.cumsum(lengths) - lengths
    return lengths, np.arange(len(codes)) - starts[codes]


def finish_rows(rows: pa.Table, config: DataConfig, report: DataReport) -> pa.Table:
    """Per-user steps on the flat rows: each user's rows together in time order, the history cap, then the
    leave-one-out minimum. Blocks may arrive in any order; the `_position` each row got while ordering its user
    restores the order."""
    # Arrow's dictionary encoding numbers the users without a Python object per row (10M-row logs stay lean).
    encoded = pc.dictionary_encode(rows["user_id"].combine_chunks())
    codes, num_users = encoded.indices.to_numpy(zero_copy_only=False), len(encoded.dictionary)
    order = np.lexsort((rows[POSITION].to_numpy(), codes))
    rows, codes = rows.take(order).drop_columns([POSITION]), codes[order]
    lengths, position = user_runs(codes, num_users)
    if config.max_history is not None:
        keep = position >= lengths[codes] - config.max_history
        report.record(
            f"keep last {config.max_history} per user",
            len(codes),
            int(keep.sum()),
            {f"older than the user's last {config.max_history}": int((~keep).sum())},
        )
        rows, codes = rows.filter(pa.array(keep)), codes[keep]
        lengths, _ = user_runs(codes, num_users)
    short = lengths < LEAVE_ONE_OUT_MIN
    keep = ~short[codes]
    report.record(
        "leave-one-out minimum",
        len(codes),
        int(keep.sum()),
        {
            f"user has fewer than {LEAVE_ONE_OUT_MIN} interactions ({int((short & (lengths > 0)).sum())} users)": int(
                (~keep).sum()
            )
        },
    )
    return rows.filter(pa.array(keep))


def numbered(raw: pa.ChunkedArray) -> tuple[pd.Series, np.ndarray]:
    """The distinct raw ids in natural order, and each row's place in that order (computed in Arrow)."""
    distinct = natural_order(pd.Series(pc.unique(raw).to_numpy(zero_copy_only=False)))
    place = pc.index_in(raw, value_set=pa.array(distinct.to_numpy(), raw.type))
    return distinct, place.to_numpy(zero_copy_only=False)


def write_prepared(
    rows: pa.Table,
    items: pd.DataFrame | None,
    config: DataConfig,
    report: DataReport,
    out_dir: Path,
    raw_files: list[Path],
) -> dict:
    """Number users and items in natural order and write the prepared files; `rows` hold each user's
    interactions together, in time order."""
    user_ids, user_of_row = numbered(rows["user_id"])
    item_ids, item_of_row = numbered(rows["item_id"])
    order = np.argsort(user_of_row, kind="stable")  # stable: each user's rows stay in time order
    users = user_of_row[order].astype(np.int32)
    items_of_rows = (item_of_row[order] + 1).astype(np.int32)
    lengths, position = user_runs(users, len(user_ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)

    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "user": np.arange(len(user_ids), dtype=np.int32),
                "items": pa.ListArray.from_arrays(offsets, items_of_rows),
            }
        ),
        out_dir / "sequences.parquet",
    )
    interactions = pd.DataFrame(
        {
            "user": users,
            "item": items_of_rows,
            "timestamp": rows["timestamp"]
            .take(order)
            .cast(pa.int64())
            .to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get),
            "rating": rows["rating"].take(order).to_numpy(zero_copy_only=False),
            "position": position.astype(np.int32),
        }
    )
    interactions.to_parquet(out_dir / "interactions.parquet", index=False)
    pd.DataFrame({"user": np.arange(len(user_ids), dtype=np.int32), "user_id": user_ids}).to_parquet(
        out_dir / "users.parquet", index=False
    )
    item_table = build_item_table(item_ids, items, report)
    item_table.to_parquet(out_dir / "items.parquet", index=False)

    item_sequences = np.split(items_of_rows, offsets[1:-1])
    negatives = []
    for split_index, split in enumerate(("valid", "test")):
        for count in config.negatives:
            rng = np.random.default_rng([config.seed, split_index, count])
            drawn = draw_negatives(item_sequences, len(item_ids), count, rng, list(user_ids))
            negatives.append(
                pd.DataFrame(
                    {
                        "user": np.arange(len(user_ids), dtype=np.int32),
                        "split": split,
                        "num_negatives": count,
                        "items": list(drawn),
                    }
                )
            )
    pd.concat(negatives).to_parquet(out_dir / "negatives.parquet", index=False)

    fingerprint = data_fingerprint(config, raw_files)
    counts = {
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": int(lengths.sum()),
        "train_interactions": int((lengths - 2).sum()),
        "sequence_length": {"min": int(lengths.min()), "median": float(np.median(lengths)), "max": int(lengths.max())},
    }
    return report.write(
        out_dir / "data_report.json",
        counts=counts,
        fingerprint=fingerprint,
        config=config.model_dump(mode="json"),
        raw_files=[str(p) for p in raw_files],
    )


def data_fingerprint(config: DataConfig, raw_files: list[Path]) -> str:
    """What the prepared data is a function of: the raw files' contents and the preparation settings."""
    return hashlib.sha256(
        json.dumps(
            {
                "files": {p.name: file_sha256(p) for p in raw_files},
                "config": config.model_dump(mode="json"),
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]


def user_raw_files(config: DataConfig) -> list[Path]:
    """The raw files a config names itself, with the files read together with them (the item id map, the other
    RecBole split files), in the order the fingerprint lists them; a fetched dataset's files are pinned by their
    checksums instead."""
    return raw_files(config).all_paths if config.interactions_path else []


def check_items_agree(table: pa.Table, items: pd.DataFrame, interactions_path: Path, items_path: Path) -> None:
    """The items file must cover every item the interactions name (the reader rejects duplicate ids)."""
    unknown = pc.invert(pc.is_in(table["item_id"], value_set=pa.array(items["item_id"])))
    missing = table.filter(unknown)
    if missing.num_rows:
        raise DataError(
            f"{interactions_path.name} {row_unit(table)} {missing['row'][0].as_py()}: field 'item_id' "
            f"value {missing['item_id'][0].as_py()!r} is not in {items_path.name} "
            f"({missing.num_rows} interactions name unknown items); the two files disagree"
        )


def build_item_table(item_ids: pd.Series, items: pd.DataFrame | None, report: DataReport) -> pd.DataFrame:
    """Item index → raw id and text fields; interactions naming an item absent from the items file are an error."""
    table = pd.DataFrame({"item": np.arange(1, len(item_ids) + 1, dtype=np.int32), "item_id": item_ids})
    if items is None:
        return table
    unused = int((~items["item_id"].isin(item_ids)).sum())
    if unused:
        report.notes.append(f"{unused} items of the items file have no remaining interactions and are not used")
    return table.merge(items.drop(columns=[c for c in ("row",) if c in items]), on="item_id", how="left")


def ensure_prepared(data: DataConfig, run_dir: str, cache_root: Path | None = None) -> Path:
    """Prepare the dataset into the run directory once; refuse to silently re-prepare with other settings."""
    layout = RunLayout(run_dir)
    data_dir = layout.data_dir(data.dataset)
    layout.store.pull(data_dir)
    report_file = data_dir / "data_report.json"
    if report_file.exists():
        check_readable(report_file)  # a damaged report is an error naming it, not a silent re-preparation
        report = json.loads(report_file.read_text())
        differing = [
            f"{k}: {there!r} there, {here!r} here"
            for k, there, here in differing_settings(report["config"], data.model_dump(mode="json"))
        ]
        if differing:
            raise ArtifactError(
                f"{data_dir} was prepared with other data settings ({'; '.join(differing)}); "
                "use a new run directory or delete that folder"
            )
        raw_files = user_raw_files(data)
        if (
            raw_files
            and all(p.is_file() for p in raw_files)
            and data_fingerprint(data, raw_files) != report["fingerprint"]
        ):
            raise ArtifactError(
                f"{data_dir} was prepared from other contents of "
                f"{', '.join(map(str, raw_files))} (the files changed since; data fingerprint "
                f"{report['fingerprint']} there); use a new run directory or delete that folder"
            )
        log.info("prepared data found at %s (same settings and raw files); skipping preparation", data_dir)
        return data_dir
    report = prepare_dataset(data, data_dir, cache_root)
    layout.store.push(data_dir)
    log.info("prepared %s: %s", data.dataset, report["counts"])
    return data_dir
