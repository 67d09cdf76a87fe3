"""Where a run directory lives: a local path or a URI, resolved through pyarrow filesystems like Ray Train's
`storage_path`.

- A plain path or a `file://` URI is used in place. On a multi-node cluster it must be shared storage mounted at
  the same path on every node (EFS, Filestore, NFS).
- An object-store URI (`s3://`, `gs://`, any scheme pyarrow resolves) is the durable copy; every process that
  reads or writes artifacts (the driver, Ray Train workers, inference tasks) works in a node-local mirror under
  the raylrec cache dir and syncs at stage boundaries: `pull` before a stage reads, `push` when it has written.
  Ray Train's and Ray Tune's own storage (checkpoints, experiment state) go straight to the URI, as Ray does it,
  and are not mirrored. Keep the cache dir at the same path on every node (the default `~/.cache/raylrec` is).

`RAYLREC_MIRROR_FILE_URIS=1` treats `file://` run directories like object stores (for a slow network mount; the
tests use it to run the object-store path against a local folder).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path, PurePosixPath

from raylrec.errors import ArtifactError
from raylrec.paths import cache_dir

URI = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")
MIRROR_FILE_URIS_ENV = "RAYLREC_MIRROR_FILE_URIS"
# Every command's and every CPU preset's run directory, so the leaderboard of `raylrec run` sees what
# `raylrec train` trained
DEFAULT_RUN_DIR = "runs/default"
RUN_DIR_HELP = f"run directory: a path or a URI (file://, s3://, gs://; docs/cluster.md); default {DEFAULT_RUN_DIR}"
# Ray Train / Ray Tune storage inside a run directory: written and read by Ray through the URI itself.
RAY_STORAGE = ("models/*/train", "sweeps/*/tune", "sweeps/*/seeds-tune")


def uri_scheme(location: str | os.PathLike) -> str | None:
    """`s3` for `s3://bucket/x`, `file` for `file:///x`, None for a plain path."""
    match = URI.match(str(location))
    return match.group("scheme").lower() if match else None


def filesystem_of(location: str):
    """(pyarrow filesystem, path inside it) of a URI, or a clear error naming it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (ValueError, OSError) as err:  # unknown scheme, missing credentials, file://relative/path
        raise ArtifactError(f"run directory {location}: pyarrow cannot open it ({err})") from None


def local_path(location: str | os.PathLike) -> Path:
    """The absolute local path of a run directory given as a path or a `file://` URI."""
    scheme = uri_scheme(location)
    if scheme is None:
        return Path(location).expanduser().resolve()
    if scheme != "file":
        raise ArtifactError(f"run directory {location}: {scheme}:// is not a local path")
    import pyarrow.fs

    filesystem, path = filesystem_of(str(location))
    if not isinstance(filesystem, pyarrow.fs.LocalFileSystem):
        raise ArtifactError(f"run directory {location}: resolves to {filesystem.type_name}, not a local path")
    return Path(path).resolve()


def is_ray_storage(relative: PurePosixPath) -> bool:
    return any(relative.match(pattern) for pattern in RAY_STORAGE)


class RunStore:
    """A run directory's storage. `root` is the local folder artifacts are read from and written to; when the
    run directory is an object-store URI, `root` is this node's mirror of it and `pull`/`push` sync the two."""

    def __init__(self, location: str | os.PathLike):
        self.location = str(location)
        scheme = uri_scheme(location)
        self.mirrored = scheme not in (None, "file") or (
            scheme == "file" and os.environ.get(MIRROR_FILE_URIS_ENV) in ("1", "true", "yes")
        )
        if not self.mirrored:
            self.root = local_path(location)
            return
        self.filesystem, remote = filesystem_of(self.location)
        self.remote_root = remote.rstrip("/")
        self.root = cache_dir() / "run-mirrors" / scheme / self.remote_root.lstrip("/")

    def relative(self, path: str | os.PathLike) -> PurePosixPath:
        try:
            return PurePosixPath(Path(path).resolve().relative_to(self.root.resolve()).as_posix())
        except ValueError:
            raise ArtifactError(f"{path} is not inside the run directory {self.location} ({self.root})") from None

    def locate(self, path: str | os.PathLike) -> str:
        """A folder of the run directory as a location to hand on (Ray's `storage_path`, a nested run directory):
        the absolute local path, or for a mirrored run directory its URI (Ray resolves either with pyarrow)."""
        if not self.mirrored:
            return str(Path(path).resolve())
        relative = self.relative(path)
        scheme = uri_scheme(self.location)
        remote = f"{self.remote_root}/{relative}" if str(relative) != "." else self.remote_root
        return f"{scheme}://{remote}" if scheme != "file" else Path(remote).as_uri()

    def pull(self, path: str | os.PathLike | None = None) -> int:
        """Copy into the mirror what the URI holds and the mirror lacks or holds older (all of the run directory
        but Ray's own storage, or one folder of it); returns the number of files copied."""
        if not self.mirrored:
            return 0
        import pyarrow.fs

        relative = self.relative(path) if path is not None else PurePosixPath(".")
        copied, folders = 0, [relative]
        while folders:
            folder = folders.pop()
            remote = self.remote_root if str(folder) == "." else f"{self.remote_root}/{folder}"
            for info in self.filesystem.get_file_info(pyarrow.fs.FileSelector(remote, allow_not_found=True)):
                child = folder / info.base_name if str(folder) != "." else PurePosixPath(info.base_name)
                if info.type == pyarrow.fs.FileType.Directory:
                    if not is_ray_storage(child):
                        folders.append(child)
                elif info.type == pyarrow.fs.FileType.File and self._stale(child, info):
                    self._download(info.path, self.root / child, info.mtime_ns)
                    copied += 1
        return copied

    def push(self, path: str | os.PathLike) -> int:
        """Upload a folder (or file) of the mirror to the URI, skipping Ray's own storage; returns files copied."""
        if not self.mirrored:
            return 0
        local = Path(path)
        self.relative(local)  # refuse a path outside the run directory even when it holds no files
        files = [local] if local.is_file() else [p for p in sorted(local.rglob("*")) if p.is_file()]
        copied = 0
        for file in files:
            relative = self.relative(file)
            if any(is_ray_storage(parent) for parent in relative.parents):
                continue
            remote = f"{self.remote_root}/{relative}"
            self.filesystem.create_dir(remote.rsplit("/", 1)[0], recursive=True)
            with file.open("rb") as source, self.filesystem.open_output_stream(remote) as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            # The mirror copy now matches the uploaded one: give it the URI's time so a pull skips it.
            mtime = self.filesystem.get_file_info(remote).mtime_ns
            if mtime is not None:
                os.utime(file, ns=(mtime, mtime))
            copied += 1
        return copied

    def _stale(self, relative: PurePosixPath, info) -> bool:
        local = self.root / relative
        if not local.exists():
            return True
        stat = local.stat()
        return stat.st_size != info.size or (info.mtime_ns is not None and info.mtime_ns > stat.st_mtime_ns)

    def _download(self, remote: str, local: Path, mtime_ns: int | None) -> None:
        # Into a temporary file then renamed: processes on one node (driver, workers) may pull at once.
        local.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.")
        try:
            with os.fdopen(handle, "wb") as sink, self.filesystem.open_input_stream(remote) as source:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            if mtime_ns is not None:
                os.utime(temporary, ns=(mtime_ns, mtime_ns))
            os.replace(temporary, local)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


class RunLayout:
    """Named artifact locations under one run directory, so later stages find earlier outputs by name."""

    def __init__(self, run_dir: str | os.PathLike):
        """`run_dir`: a path or a URI (`file://`, `s3://`, …; see the module docstring)."""
        self.location = str(run_dir)
        self.store = RunStore(run_dir)
        self.root = self.store.root

    def data_dir(self, dataset: str) -> Path:
        return self.root / "data" / dataset

    def model_dir(self, model_name: str) -> Path:
        return self.root / "models" / model_name

    def embeddings_dir(self, key: str) -> Path:
        return self.root / "embeddings" / key
