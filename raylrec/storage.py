"""Where a run directory lives: a local path or a URI, resolved through pyarrow filesystems like Ray Train's
`storage_path`.

raylrec's own artifacts (parquet, safetensors, JSON) are written through a file-system path, so a run directory
must resolve to one: a plain path or a `file://` URI. On a multi-node cluster that path must be shared storage
mounted at the same place on every node (EFS, Filestore, NFS, a FUSE-mounted bucket — see the README, "Storage"),
because the driver, the Ray Train workers and the encode actors each read and write it from their own node.
Object-store URIs (`s3://`, `gs://`, …) are recognised and refused with that advice, rather than silently
written to a local folder named `s3:`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from raylrec.errors import ArtifactError

URI = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*)://")


def uri_scheme(location: str | os.PathLike) -> str | None:
    """`s3` for `s3://bucket/x`, `file` for `file:///x`, None for a plain path."""
    match = URI.match(str(location))
    return match.group("scheme").lower() if match else None


def local_path(location: str | os.PathLike) -> Path:
    """The absolute local path of a run directory given as a path or a `file://` URI."""
    scheme = uri_scheme(location)
    if scheme is None:
        return Path(location).expanduser().resolve()
    if scheme == "file":
        import pyarrow.fs

        try:
            filesystem, path = pyarrow.fs.FileSystem.from_uri(str(location))
        except (ValueError, OSError) as err:  # e.g. file://relative/path (a host part) is not a local path
            raise ArtifactError(f"run directory {location}: not a local file URI ({err}); "
                                "write file:///absolute/path") from None
        if not isinstance(filesystem, pyarrow.fs.LocalFileSystem):
            raise ArtifactError(f"run directory {location}: resolves to {filesystem.type_name}, not a local path")
        return Path(path).resolve()
    raise ArtifactError(
        f"run directory {location}: raylrec writes its artifacts through a file-system path, and {scheme}:// is "
        "an object store. Mount shared storage at the same path on every node (EFS/Filestore/NFS, or the bucket "
        "through a FUSE mount) and give that path or a file:// URI; see the README, section Storage")


def ray_storage_path(directory: Path) -> str:
    """A stage folder as Ray Train's `storage_path`: a `file://` URI, which Ray resolves with pyarrow exactly as
    it would `s3://` or `gs://` (so the same code path serves a bucket-backed Ray Train storage)."""
    return Path(directory).resolve().as_uri()
