"""Item-embedding artifacts: `<run_dir>/embeddings/<key>/{embeddings.safetensors, meta.json}`.

The tensor `embeddings` is (num_items + 1, dim) float32: row 0 is zeros (padding), row i is item i.
The key hashes everything that changes the vectors, so a second run with the same settings reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file
from safetensors.torch import load_file

from raylrec.config import StrictModel
from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError

EMBEDDINGS_FILE = "embeddings.safetensors"
META_FILE = "meta.json"
TENSOR_NAME = "embeddings"


class EmbeddingMeta(StrictModel):
    key: str
    model: str  # the spec as given (short name, path or hub id)
    model_source: str  # what identifies the weights (package==version, absolute path, hub id)
    model_family: str
    pooling: str  # after resolving `auto`
    normalize: bool
    max_length: int
    template: str
    text_hash: str
    dim: int
    dtype: str
    dataset: str
    dataset_fingerprint: str
    num_items: int
    missing_fields: dict[str, int]  # template field → items where it was null or blank
    empty_texts: int
    encode_seconds: float


@dataclass
class ItemEmbeddings:
    vectors: torch.Tensor  # (num_items + 1, dim), row 0 zeros
    meta: EmbeddingMeta
    path: Path


def embeddings_key(
    *,
    model: str,
    model_source: str,
    pooling: str,
    normalize: bool,
    max_length: int,
    template: str,
    text_hash: str,
    dataset_fingerprint: str,
) -> str:
    """Short hash of the settings; the fingerprint is in it so one run dir can hold several datasets' vectors."""
    settings = dict(
        model=model,
        model_source=model_source,
        pooling=pooling,
        normalize=normalize,
        max_length=max_length,
        template=template,
        text_hash=text_hash,
        dataset_fingerprint=dataset_fingerprint,
    )
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_meta(directory: Path) -> EmbeddingMeta | None:
    """The metadata of a complete artifact in `directory`, or None if there is none."""
    if not ((directory / META_FILE).exists() and (directory / EMBEDDINGS_FILE).exists()):
        return None
    return EmbeddingMeta.model_validate_json((directory / META_FILE).read_text())


def write_embeddings(directory: Path, vectors: np.ndarray, meta: EmbeddingMeta) -> Path:
    """Write into a staging folder and rename, so a half-written artifact is never taken for a cache hit."""
    if vectors.shape != (meta.num_items + 1, meta.dim):
        raise ArtifactError(
            f"embeddings of shape {vectors.shape} do not match {meta.num_items} items + padding × {meta.dim}"
        )
    staging = directory.with_name(f"{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({TENSOR_NAME: np.ascontiguousarray(vectors, dtype=np.float32)}, str(staging / EMBEDDINGS_FILE))
    (staging / META_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
    try:
        os.rename(staging, directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if read_meta(directory) is None:
            raise
    return directory


def load_item_embeddings(
    path_or_dir: str | os.PathLike, expected_dim: int | None = None, data: PreparedData | None = None
) -> ItemEmbeddings:
    """Load an artifact (its folder, or either file in it), checking dimension and dataset if given."""
    path = Path(path_or_dir)
    directory = path.parent if path.is_file() else path
    meta = read_meta(directory)
    if meta is None:
        raise ArtifactError(
            f"no item embeddings at {directory} (expected {EMBEDDINGS_FILE} and {META_FILE}); "
            "run `raylrec encode` first"
        )
    vectors = load_file(str(directory / EMBEDDINGS_FILE)).get(TENSOR_NAME)
    if vectors is None or tuple(vectors.shape) != (meta.num_items + 1, meta.dim):
        found = None if vectors is None else tuple(vectors.shape)
        raise ArtifactError(
            f"{directory / EMBEDDINGS_FILE}: tensor {TENSOR_NAME!r} has shape {found}, but "
            f"{META_FILE} says {meta.num_items} items + padding × {meta.dim}"
        )
    if expected_dim is not None and meta.dim != expected_dim:
        raise ArtifactError(
            f"item embeddings at {directory} are {meta.dim}-d ({meta.model}, {meta.pooling} pooling), "
            f"but this stage expects {expected_dim}-d; encode with a matching model or change "
            "the stage's text dimension"
        )
    if data is not None:
        if data.fingerprint != meta.dataset_fingerprint:
            raise ArtifactError(
                f"item embeddings at {directory} were made from dataset {meta.dataset} with "
                f"fingerprint {meta.dataset_fingerprint}, not from this one ({data.fingerprint}); "
                "re-run `raylrec encode` on this dataset"
            )
        if data.num_items != meta.num_items:
            raise ArtifactError(
                f"item embeddings at {directory} cover {meta.num_items} items; the dataset has {data.num_items}"
            )
    return ItemEmbeddings(vectors, meta, directory)
