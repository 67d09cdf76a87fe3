"""`raylrec encode`: item texts → vectors as a Ray Data batch-inference job, cached per settings.

The driver renders the texts (it needs them for the cache key and the missing-field report), the
actor pool loads the model once per actor and encodes batches, and the driver writes one artifact.
The same code runs on the local Ray instance and on a cluster.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray
from pydantic import Field, model_validator

from raylrec.config import StrictModel
from raylrec.data.prepared import PreparedData
from raylrec.errors import RaylrecError
from raylrec.monitoring import record_encoded
from raylrec.ray_utils import cluster_has_gpus, ensure_ray
from raylrec.storage import RunLayout
from raylrec.text.artifacts import EmbeddingMeta, embeddings_key, read_meta, write_embeddings
from raylrec.text.encoder import TextEncoder, TextModelConfig
from raylrec.text.pooling import resolve_pooling
from raylrec.text.registry import ResolvedModel, load_text_model, resolve_model
from raylrec.text.templates import RenderedTexts, default_template, render_texts

log = logging.getLogger(__name__)

# CPUs left unreserved by the actor pool: if the actors hold every CPU, Ray Data's other tasks never
# get one and the job hangs (see shared notes). Reservations are for scheduling only; threads are set apart.
FREE_CPUS_FOR_OTHER_TASKS = 0.5


class EncodeConfig(StrictModel):
    text: TextModelConfig = TextModelConfig()
    batch_size: int = Field(64, ge=1)
    num_actors: int = Field(1, ge=1)
    max_actors: int | None = None  # above num_actors: an autoscaling pool between the two
    cpus_per_actor: float | None = Field(None, gt=0)  # None: up to 1, leaving room for Ray Data's other tasks
    gpus_per_actor: float | None = Field(None, ge=0)  # None: 1 when the cluster has GPUs, else 0
    torch_threads: int = Field(1, ge=1)  # per actor on CPU; more threads per process oversubscribe small hosts
    actor_start_timeout_s: int = Field(600, ge=1)  # for the pool's first actors to load the model

    @model_validator(mode="after")
    def _pool_bounds(self):
        if self.max_actors is not None and self.max_actors < self.num_actors:
            raise ValueError(f"max_actors ({self.max_actors}) is below num_actors ({self.num_actors})")
        return self

    @property
    def pool_max(self) -> int:
        return self.max_actors or self.num_actors


@dataclass
class EncodeResult:
    path: Path
    meta: EmbeddingMeta
    cache_hit: bool


class ItemEncoder:
    """Ray Data callable class: loads the model once per actor, then encodes `text` batches."""

    def __init__(
        self, text: TextModelConfig, expected_source: str, cache_root: str | None, torch_threads: int, use_gpu: bool
    ):
        import torch

        torch.set_num_threads(torch_threads)
        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        resolved = resolve_model(text.model, cache_root)  # on this actor's node: converts once if needed
        if resolved.source != expected_source:
            raise RaylrecError(
                f"this node has {resolved.source} for {text.model!r}, the driver {expected_source}; "
                "install the same version on every node"
            )
        self.encoder = TextEncoder(
            load_text_model(resolved, device=device), text.pooling, text.normalize, text.max_length
        )
        self.model_name = str(text.model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        out = {"item": batch["item"], "embedding": self.encoder.encode([str(t) for t in batch["text"]])}
        record_encoded(self.model_name, len(batch["item"]), time.perf_counter() - started)  # dashboard metrics
        return out


def actor_cpus(requested: float | None, pool_max: int, cluster_cpus: float) -> float:
    """CPUs reserved per actor: at most 1 by default, and never so many that the pool holds every CPU."""
    if requested is None:
        share = math.floor((cluster_cpus - FREE_CPUS_FOR_OTHER_TASKS) / pool_max * 100) / 100
        if share <= 0:
            raise RaylrecError(
                f"{pool_max} encoder actors do not fit on {cluster_cpus:g} CPUs with "
                f"{FREE_CPUS_FOR_OTHER_TASKS} CPU left for other tasks; use fewer actors"
            )
        return min(1.0, share)
    if requested * pool_max > cluster_cpus - FREE_CPUS_FOR_OTHER_TASKS:
        raise RaylrecError(
            f"{pool_max} actors × {requested:g} CPUs leave less than {FREE_CPUS_FOR_OTHER_TASKS} of "
            f"the cluster's {cluster_cpus:g} CPUs for Ray Data's other tasks, and the job would hang; "
            "lower cpus_per_actor or the number of actors"
        )
    return requested


def encode_reservation(config: EncodeConfig) -> float:
    """CPUs an encode job holds while it runs: its actors' reservations plus the share left for Ray Data's
    other tasks (what must be free before it starts beside other jobs)."""
    ensure_ray()
    cluster = ray.cluster_resources().get("CPU", 0)
    return config.pool_max * actor_cpus(config.cpus_per_actor, config.pool_max, cluster) + FREE_CPUS_FOR_OTHER_TASKS


def length_sorted(rendered: RenderedTexts) -> pd.DataFrame:
    """Items with text ordered by its length, longest first: each batch pads to a similar length (less wasted
    compute), and the batches left at the end, when actors may run out of work unevenly, are the quickest. Items
    with a blank text are left out (they keep a zero vector)."""
    frame = pd.DataFrame({"item": np.asarray(rendered.items, dtype=np.int64), "text": rendered.texts})
    frame = frame[~frame["item"].isin(rendered.blank_items)]
    order = np.argsort(-frame["text"].str.len().to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def embedding_dataset(
    rendered: RenderedTexts,
    resolved: ResolvedModel,
    config: EncodeConfig,
    cache_root: str | Path | None = None,
    encoder_class: type = ItemEncoder,
) -> ray.data.Dataset:
    """The lazy Ray Data job: rows `item`, `embedding`. `encoder_class` lets the benchmark time the actors."""
    frame = length_sorted(rendered)
    # One block per batch, so the pool's actors share the work evenly.
    blocks = [frame.iloc[start : start + config.batch_size] for start in range(0, len(frame), config.batch_size)]
    gpus = config.gpus_per_actor if config.gpus_per_actor is not None else float(cluster_has_gpus())
    pool = (
        ray.data.ActorPoolStrategy(min_size=config.num_actors, max_size=config.max_actors)
        if config.pool_max > config.num_actors
        else ray.data.ActorPoolStrategy(size=config.num_actors)
    )
    dataset = ray.data.from_pandas(blocks).map_batches(
        encoder_class,
        fn_constructor_kwargs=dict(
            text=config.text.model_copy(update={"model": resolved.spec}),
            expected_source=resolved.source,
            cache_root=str(cache_root) if cache_root else None,
            torch_threads=config.torch_threads,
            use_gpu=gpus > 0,
        ),
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=pool,
        num_cpus=actor_cpus(config.cpus_per_actor, config.pool_max, ray.cluster_resources().get("CPU", 0)),
        num_gpus=gpus,
    )
    # Batches go out once the pool's first actors all have their model, so they share the work from the start;
    # a pool the cluster cannot place fails after this long, saying so, instead of waiting forever.
    dataset.context.wait_for_min_actors_s = config.actor_start_timeout_s
    return dataset


def collect_vectors(dataset: ray.data.Dataset, num_items: int, blank_items: list[int]) -> np.ndarray:
    """(num_items + 1, dim) float32 with row 0 zeros and row i the vector of item i; zeros for the items
    without text (`blank_items`, not sent to the encoder)."""
    vectors = None
    seen = np.zeros(num_items + 1, dtype=bool)
    seen[blank_items] = True
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        if vectors is None:
            vectors = np.zeros((num_items + 1, batch["embedding"].shape[1]), dtype=np.float32)
        vectors[batch["item"]] = batch["embedding"]
        seen[batch["item"]] = True
    if vectors is None:
        raise RaylrecError(f"no item of {num_items} has any text to encode")
    if not seen[1:].all():
        raise RaylrecError(
            f"the encode job returned vectors for {int(seen[1:].sum()) - len(blank_items)} of "
            f"{num_items - len(blank_items)} items with text"
        )
    return vectors


def encode_items(
    config: EncodeConfig, data_dir: str | Path, run_dir: str | Path, cache_root: str | Path | None = None
) -> EncodeResult:
    """Encode every item of a prepared dataset, or reuse the artifact already made with the same settings."""
    data = PreparedData(data_dir)
    dataset_name = data.report["dataset"]
    template = config.text.template or default_template(dataset_name)
    rendered = render_texts(data.items_table(), template)
    if any(rendered.missing.values()):
        log.warning(
            "text fields missing (null or blank) per item count: %s; %d items have no text at all",
            rendered.missing,
            rendered.empty_texts,
        )
    if rendered.blank_items:
        log.warning("%d items have a blank text; they get a zero vector", len(rendered.blank_items))
    resolved = resolve_model(config.text.model, cache_root)
    pooling = resolve_pooling(config.text.pooling, resolved.family)
    key = embeddings_key(
        model=config.text.model,
        model_source=resolved.source,
        pooling=pooling,
        normalize=config.text.normalize,
        max_length=config.text.max_length,
        template=template,
        text_hash=rendered.text_hash,
        dataset_fingerprint=data.fingerprint,
    )
    layout = RunLayout(run_dir)
    out_dir = layout.embeddings_dir(key)
    layout.store.pull(out_dir)
    cached = read_meta(out_dir)
    if cached is not None:
        log.info("item embeddings found at %s; not re-encoding", out_dir)
        return EncodeResult(out_dir, cached, cache_hit=True)

    ensure_ray()
    log.info(
        "encoding %d items of %s with %s (%s), %s pooling, template %r",
        data.num_items,
        dataset_name,
        config.text.model,
        resolved.source,
        pooling,
        template,
    )
    started = time.perf_counter()
    vectors = collect_vectors(
        embedding_dataset(rendered, resolved, config, cache_root), data.num_items, rendered.blank_items
    )
    meta = EmbeddingMeta(
        key=key,
        model=config.text.model,
        model_source=resolved.source,
        model_family=resolved.family,
        pooling=pooling,
        normalize=config.text.normalize,
        max_length=config.text.max_length,
        template=template,
        text_hash=rendered.text_hash,
        dim=vectors.shape[1],
        dtype=str(vectors.dtype),
        dataset=dataset_name,
        dataset_fingerprint=data.fingerprint,
        num_items=data.num_items,
        missing_fields=rendered.missing,
        empty_texts=rendered.empty_texts,
        encode_seconds=round(time.perf_counter() - started, 2),
    )
    write_embeddings(out_dir, vectors, meta)
    layout.store.push(out_dir)
    log.info("wrote %s (%d × %d)", out_dir, *vectors.shape)
    return EncodeResult(out_dir, meta, cache_hit=False)
