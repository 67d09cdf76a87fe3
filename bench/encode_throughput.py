"""Item-encoding throughput: a plain single-process loop vs the Ray Data job with 1 and 2 actors.

    python bench/encode_throughput.py --data-dir /tmp/rt/data/ml-100k [--models minilm smollm2-135m] [--repeats 5]

Every mode encodes the same texts in the same length-sorted batches with one torch thread per process.
A fourth mode, two plain processes started together that each encode every other batch, is what the host itself
allows two workers without Ray: its ratio to the loop is the ceiling for the 2-actor job's ratio to 1 actor.
The modes run in rounds (loop, two processes, 1 actor, 2 actors; `--repeats` rounds). The host's speed drifts by
±10 % within minutes, so the scaling ratios are taken within each round (modes a minute apart) and the second
table gives every round's ratio and their median; the first table shows each mode's median run.
"setup s" is everything before the first batch runs: the model load for the loop; for the Ray job, job start
until the pool's actors have their models and the first batch starts (actor start + model load — shown apart —
+ the pool's start-up wait). items/s counts encoding only: from the first batch's start to the last vector.
"busy s per worker" sums the time each actor spent inside its batches (the rest of "encode s" is dispatch,
waiting and the tail), or each plain process's encoding time.
Starts a Ray instance of its own (never joins another cluster on the host) and shuts it down at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402

from raylrec.data.prepared import PreparedData  # noqa: E402
from raylrec.ray_utils import quiet_library_logs  # noqa: E402
from raylrec.text.encode import EncodeConfig, ItemEncoder, embedding_dataset, length_sorted  # noqa: E402
from raylrec.text.encoder import TextEncoder, TextModelConfig  # noqa: E402
from raylrec.text.registry import load_text_model, resolve_model  # noqa: E402
from raylrec.text.templates import default_template, render_texts  # noqa: E402


class TimedItemEncoder(ItemEncoder):
    """The production actor, plus when its model was ready and how long loading took."""

    def __init__(self, **kwargs):
        started = time.time()
        super().__init__(**kwargs)
        self.ready_at = time.time()
        self.load_s = self.ready_at - started

    def __call__(self, batch):
        started = time.time()
        out = super().__call__(batch)
        rows = len(batch["item"])
        out.update(
            started_at=np.full(rows, started),
            busy_s=np.full(rows, time.time() - started),
            load_s=np.full(rows, self.load_s),
            pid=np.full(rows, os.getpid()),
        )
        return out


def plain_loop(rendered, resolved, batch_size: int) -> tuple[dict, np.ndarray]:
    torch.set_num_threads(1)
    started = time.perf_counter()
    encoder = TextEncoder(load_text_model(resolved))
    loaded = time.perf_counter()
    frame = length_sorted(rendered)
    vectors = np.zeros((len(frame) + 1, 0), dtype=np.float32)
    for start in range(0, len(frame), batch_size):
        chunk = frame.iloc[start : start + batch_size]
        encoded = encoder.encode(chunk["text"].tolist())
        if vectors.shape[1] == 0:
            vectors = np.zeros((len(frame) + 1, encoded.shape[1]), dtype=np.float32)
        vectors[chunk["item"].to_numpy()] = encoded
    done = time.perf_counter()
    return dict(
        setup_s=loaded - started, load_s=loaded - started, encode_s=done - loaded, wall_s=done - started, actors_used=0
    ), vectors


def loop_share(resolved, texts: list[str], batch_size: int, worker: int, workers: int, start_together, results):
    """One of the plain processes: load the model, wait for the others, encode every `workers`-th batch."""
    torch.set_num_threads(1)
    started = time.time()
    encoder = TextEncoder(load_text_model(resolved))
    load_s = time.time() - started
    start_together.wait()
    began = time.time()
    for start in range(worker * batch_size, len(texts), workers * batch_size):
        encoder.encode(texts[start : start + batch_size])
    results.put((load_s, began, time.time()))


def plain_processes(rendered, resolved, batch_size: int, workers: int = 2) -> dict:
    """`workers` plain processes at once, each with its share of the batches (no Ray): the host's own scaling."""
    texts = length_sorted(rendered)["text"].tolist()
    started = time.time()
    context = multiprocessing.get_context("spawn")
    start_together, results = context.Barrier(workers), context.Queue()
    processes = [
        context.Process(target=loop_share, args=(resolved, texts, batch_size, worker, workers, start_together, results))
        for worker in range(workers)
    ]
    for process in processes:
        process.start()
    load_s, began, done = zip(*(results.get() for _ in processes))
    for process in processes:
        process.join()
    return dict(
        setup_s=max(load_s),
        load_s=max(load_s),
        encode_s=max(done) - min(began),
        wall_s=max(done) - started,
        actors_used=0,
        busy_s=sorted(d - b for b, d in zip(began, done)),
    )


def ray_job(rendered, resolved, model: str, batch_size: int, actors: int) -> tuple[dict, np.ndarray]:
    config = EncodeConfig(text=TextModelConfig(model=model), batch_size=batch_size, num_actors=actors)
    started = time.time()
    dataset = embedding_dataset(rendered, resolved, config, encoder_class=TimedItemEncoder)
    vectors = np.zeros((len(rendered.items) + 1, 0), dtype=np.float32)
    batch_starts, load_s, busy = [], [], {}
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        if vectors.shape[1] == 0:
            vectors = np.zeros((len(rendered.items) + 1, batch["embedding"].shape[1]), dtype=np.float32)
        vectors[batch["item"]] = batch["embedding"]
        batch_starts.extend(batch["started_at"])
        load_s.extend(batch["load_s"])
        for pid, _started_at, seconds in set(
            zip(batch["pid"].tolist(), batch["started_at"].tolist(), batch["busy_s"].tolist())
        ):
            busy[pid] = busy.get(pid, 0.0) + seconds
    done = time.time()
    first_batch = min(batch_starts)
    return dict(
        setup_s=first_batch - started,
        load_s=max(load_s),
        encode_s=done - first_batch,
        wall_s=done - started,
        actors_used=len(busy),
        busy_s=sorted(busy.values()),
    ), vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a prepared dataset folder")
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2-135m"])
    parser.add_argument("--batch-size", type=int, default=EncodeConfig().batch_size)
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the four modes")
    args = parser.parse_args()

    data = PreparedData(args.data_dir)
    template = default_template(data.report["dataset"])
    rendered = render_texts(data.items_table(), template)
    print(
        f"{data.report['dataset']}: {len(rendered.texts)} items, template {template!r}, batch {args.batch_size}, "
        f"host load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )

    quiet_library_logs()
    ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        logging_level="WARNING",
        _temp_dir=tempfile.mkdtemp(prefix="ray-bench-"),
    )
    runs: dict[tuple[str, str], list[tuple[dict, float | None]]] = {}
    try:
        for model in args.models:
            resolved = resolve_model(model)  # converts a packaged GGUF once (cached), outside every timing
            for _ in range(args.repeats):
                loop, reference = plain_loop(rendered, resolved, args.batch_size)
                runs.setdefault((model, "plain loop"), []).append((loop, None))
                runs.setdefault((model, "2 plain processes"), []).append(
                    (plain_processes(rendered, resolved, args.batch_size), None)
                )
                for actors in (1, 2):
                    stats, vectors = ray_job(rendered, resolved, model, args.batch_size, actors)
                    runs.setdefault((model, f"Ray Data, {actors} actor{'s' if actors > 1 else ''}"), []).append(
                        (stats, float(np.abs(vectors - reference).max()))
                    )
    finally:
        ray.shutdown()

    print(f"\nmedian of {args.repeats} rounds per mode\n")
    print(
        "| model | mode | setup s (model load s) | encode s | busy s per worker | items/s | items/s per round "
        "| × loop | × 1 actor | wall s | max diff vs loop |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    median_rate, round_rates = {}, {}
    for (model, mode), results in runs.items():
        rates = round_rates[model, mode] = [len(rendered.texts) / stats["encode_s"] for stats, _ in results]
        median = int(np.argsort(rates)[len(rates) // 2])  # the median round (the upper one for even counts)
        stats, rate = results[median][0], rates[median]
        median_rate[model, mode] = rate
        used = f" ({stats['actors_used']} got batches)" if stats["actors_used"] else ""
        busy = " / ".join(f"{b:.1f}" for b in stats.get("busy_s", [])) or "–"
        one_actor = median_rate.get((model, "Ray Data, 1 actor"))
        vs_one = f"{rate / one_actor:.2f}" if one_actor and mode != "Ray Data, 1 actor" else "–"
        diffs = [diff for _, diff in results if diff is not None]
        print(
            f"| {model} | {mode}{used} | {stats['setup_s']:.1f} ({stats['load_s']:.1f}) | {stats['encode_s']:.1f} "
            f"| {busy} | {rate:.0f} | {' / '.join(f'{r:.0f}' for r in rates)} "
            f"| {rate / median_rate[model, 'plain loop']:.2f} | {vs_one} | {stats['wall_s']:.1f} "
            f"| {f'{max(diffs):.1e}' if diffs else '–'} |"
        )
    print("\nitems/s ratios within each round\n")
    print("| model | ratio | per round | median |")
    print("|---|---|---|---|")
    for model in args.models:
        for faster, slower in (
            ("Ray Data, 1 actor", "plain loop"),
            ("Ray Data, 2 actors", "Ray Data, 1 actor"),
            ("2 plain processes", "plain loop"),
        ):
            ratios = [a / b for a, b in zip(round_rates[model, faster], round_rates[model, slower])]
            print(
                f"| {model} | {faster} ÷ {slower} | {' / '.join(f'{r:.2f}' for r in ratios)} "
                f"| {np.median(ratios):.2f} |"
            )
    print(f"\nhost load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
