"""Preparation speed: `prepare_dataset` (Ray Data row-level steps) against the same steps in plain pandas.

    python bench/prepare.py --out /work/runs/data/bench-prepare [--datasets amazon14-beauty synthetic]
                            [--rows 10000000] [--engines raylrec pandas]

`amazon14-beauty` is read from its local copy ($RAYLREC_DATASETS_DIR or --source-dir). `synthetic` is a headerless
`user item` log without timestamps (the case that used to fall back to pickled Python objects in Ray Data) of
`--rows` rows: users with 5-35 items (mean 20), items drawn with a Zipf-like popularity, 10 % repeated pairs.

Each (dataset, engine) runs in a fresh process on a fresh local Ray instance, so peak memory is its own: the sum of
the resident memory of the process and all its children (Ray's GCS, raylet and workers), sampled every 0.2 s.
"time s" is `prepare_dataset` from reading the file to the last file written, negatives included, after Ray has
started (shown apart as "ray start s"). The pandas engine reads with the same reader and writes with the same
writer (ids, split, negatives); only the row-level steps (per-user ordering, de-duplication) run in one pandas
process instead of on Ray Data; both must give identical prepared files (checked: "same output").
The default DataConfig (no filters; negatives 19 and 100) throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402


class PeakMemory:
    """Peak of the summed RSS of this process and its descendants, sampled by a background thread."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s, self.peak, self._stop = interval_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def write_synthetic_log(path: Path, rows: int, seed: int = 0) -> Path:
    """A headerless `user item` log of about `rows` lines (see the module docstring)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 36, size=rows // 20 + 1)
    lengths = lengths[np.cumsum(lengths) <= rows]
    num_items = max(1_000, rows // 100)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    items = rng.choice(num_items, size=int(lengths.sum()), p=popularity / popularity.sum())
    repeat = rng.random(len(items)) < 0.1  # a repeated (user, item) pair: the user's previous item again
    items[1:][repeat[1:]] = items[:-1][repeat[1:]]
    users = np.repeat(np.arange(len(lengths)), lengths)
    frame = pd.DataFrame({"user": pd.Series(users).map("u{}".format), "item": pd.Series(items).map("i{}".format)})
    frame.to_csv(path, sep=" ", header=False, index=False)
    return path


def pandas_prepare(config, out_dir: Path, cache_root: Path) -> dict:
    """`prepare_dataset` with its row-level steps in plain pandas: each user's rows together in time order (file
    order for ties), the first of each (user, item) pair kept; the same reader, writer and report otherwise."""
    from raylrec.data.prepare import POSITION, finish_rows, read_inputs, write_prepared

    files, table, items, report = read_inputs(config, cache_root)
    frame = table.to_pandas()
    keys = ["user_id", "timestamp", "row"] if table["timestamp"].null_count == 0 else ["user_id", "row"]
    frame = frame.sort_values(keys, kind="stable")
    if config.deduplicate:
        frame = frame.drop_duplicates(["user_id", "item_id"], keep="first")
    frame[POSITION] = frame.groupby("user_id", sort=False).cumcount()
    report.record(
        "order by time and de-duplicate",
        table.num_rows,
        len(frame),
        {"repeated (user, item) pair, first kept": table.num_rows - len(frame)},
    )
    rows = finish_rows(pa.Table.from_pandas(frame, preserve_index=False), config, report)
    return write_prepared(rows, items, config, report, out_dir, files.all_paths)


def run_one(dataset: str, engine: str, input_path: str | None, out: Path, source_dir: str | None) -> dict:
    """One measurement in this process (called in a fresh subprocess)."""
    import ray

    from raylrec.data.prepare import DataConfig, prepare_dataset

    if dataset == "synthetic":
        config = DataConfig(
            dataset="synthetic", interactions_path=input_path, format="whitespace", fields=["user_id", "item_id"]
        )
    else:
        config = DataConfig(dataset=dataset, source_dir=source_dir)
    out_dir = out / f"{dataset}-{engine}"
    with PeakMemory() as memory:
        began = time.perf_counter()
        if engine == "raylrec":
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
        ray_start = time.perf_counter() - began
        began = time.perf_counter()
        if engine == "raylrec":
            report = prepare_dataset(config, out_dir, cache_root=out / "cache")
        else:
            report = pandas_prepare(config, out_dir, out / "cache")
        seconds = time.perf_counter() - began
    if engine == "raylrec":
        ray.shutdown()
    raw_rows = report["steps"][0]["rows_in"]
    return {
        "dataset": dataset,
        "engine": engine,
        "rows": raw_rows,
        "ray_start_s": round(ray_start, 1),
        "time_s": round(seconds, 1),
        "rows_per_s": round(raw_rows / seconds),
        "peak_memory_gib": round(memory.peak / 2**30, 2),
        "counts": report["counts"],
        "load_before": os.getloadavg()[0],
    }


def same_output(first: Path, second: Path) -> bool:
    """Identical prepared files (contents and types): sequences, interactions, ids, item texts and negatives."""
    import pyarrow.parquet as pq

    return all(
        pq.read_table(first / f"{name}.parquet")
        .replace_schema_metadata(None)
        .equals(pq.read_table(second / f"{name}.parquet").replace_schema_metadata(None))
        for name in ("sequences", "interactions", "users", "items", "negatives")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="scratch directory (prepared data, the synthetic log)")
    parser.add_argument("--datasets", nargs="+", default=["amazon14-beauty", "synthetic"])
    parser.add_argument("--engines", nargs="+", default=["raylrec", "pandas"])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the synthetic log")
    parser.add_argument("--source-dir", help="local dataset copies (default $RAYLREC_DATASETS_DIR)")
    parser.add_argument("--one", nargs=3, metavar=("DATASET", "ENGINE", "INPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        dataset, engine, input_path = args.one
        print(json.dumps(run_one(dataset, engine, input_path if input_path != "-" else None, out, args.source_dir)))
        return

    results = []
    for dataset in args.datasets:
        input_path = "-"
        if dataset == "synthetic":
            log = out / f"synthetic-{args.rows}.txt"
            if not log.exists():
                began = time.perf_counter()
                write_synthetic_log(log, args.rows)
                print(f"wrote {log} in {time.perf_counter() - began:.0f} s", flush=True)
            input_path = str(log)
        for engine in args.engines:
            command = [sys.executable, __file__, "--out", str(out), "--one", dataset, engine, input_path]
            if args.source_dir:
                command += ["--source-dir", args.source_dir]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{dataset}/{engine} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if engine != args.engines[0]:
                first = out / f"{dataset}-{args.engines[0]}"
                results[-1]["same_output"] = same_output(first, out / f"{dataset}-{engine}")
            print(json.dumps(results[-1]), flush=True)

    print("\n| dataset | engine | rows | time s | rows/s | peak memory GiB | ray start s | load before | same output |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['dataset']} | {r['engine']} | {r['rows']:,} | {r['time_s']} | {r['rows_per_s']:,} | "
            f"{r['peak_memory_gib']} | {r['ray_start_s']} | {r['load_before']:.1f} | {r.get('same_output', '')} |"
        )


if __name__ == "__main__":
    main()
