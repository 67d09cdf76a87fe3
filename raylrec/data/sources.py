"""Where each dataset's raw files come from: per dataset name, an ordered tuple of sources tried first to last, and
the statistics published for it (checked by `raylrec data verify`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

DATASETS_DIR_VARIABLE = "RAYLREC_DATASETS_DIR"  # default root of LocalDir sources


@dataclass(frozen=True)
class KeptFile:
    """One file taken out of a source and kept in the cache."""

    member: str  # path inside the archive, under the base URL, or under the local directory
    sha256: str | None  # None: not pinned (unless the archive is), so used only with allow_unverified=True

    @property
    def filename(self) -> str:
        return PurePosixPath(self.member).name


@dataclass(frozen=True)
class ZipUrl:
    """A zip archive downloaded from a URL (http(s):// or file://)."""

    url: str
    sha256: str | None = None  # the archive's checksum: it pins every file taken out of it
    size: int | None = None  # bytes, checked with the checksum

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True)
class PipWheel:
    """A wheel fetched from the configured Python package index with `pip download`; never installed."""

    requirement: str  # e.g. "recbole==1.2.1"
    sha256: None = None  # the kept files are pinned one by one

    def describe(self) -> str:
        return f"pip download {self.requirement}"


@dataclass(frozen=True)
class FileUrls:
    """Plain files, each downloaded from `base_url` + its member path (http(s):// or file://)."""

    base_url: str
    sha256: None = None

    def describe(self) -> str:
        return self.base_url


@dataclass(frozen=True)
class LocalDir:
    """A local copy of the dataset as published: `<root>/<folder>/<member>`, where the root is the `source_dir`
    given to the fetcher (DataConfig.source_dir) or $RAYLREC_DATASETS_DIR; a source to use where no dataset site
    is reachable. Its files are checked against the pinned checksums like a download."""

    folder: str
    sha256: None = None

    def describe(self) -> str:
        return f"local directory <source_dir or ${DATASETS_DIR_VARIABLE}>/{self.folder}"


@dataclass(frozen=True)
class Source:
    """One place a dataset can be obtained from, which of its files to keep, and how to read them."""

    name: str  # also the cache sub-directory, so distinct sources never mix files
    archive: ZipUrl | PipWheel | FileUrls | LocalDir
    interactions: KeptFile
    items: KeptFile | None
    format: str  # a raylrec.data.readers format name
    extra: tuple[KeptFile, ...] = ()  # files read together with these (split files, id maps)
    items_format: str | None = None  # default: `format`
    item_columns: dict[str, str | None] | None = None  # readers.ItemColumnMapping fields of the items file
    item_ids: str | None = None  # filename (one of `extra`) mapping raw item ids to the items file's ids

    @property
    def kept(self) -> tuple[KeptFile, ...]:
        return (self.interactions, *([self.items] if self.items else []), *self.extra)

    @property
    def unpinned(self) -> list[str]:
        """Files with no checksum to verify them against (none when the archive itself is pinned)."""
        if self.archive.sha256:
            return []
        return [kept.filename for kept in self.kept if kept.sha256 is None]


@dataclass(frozen=True)
class PublishedCounts:
    """A dataset's statistics as published, and where."""

    users: int
    items: int
    interactions: int
    reference: str


_MCAULEY_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
_MCAULEY_2018 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"

# GroupLens archives are pinned by the checksums tensorflow/datasets publishes (url_checksums/movielens.txt).
# For ml-100k the RecBole wheel comes first: every ML-100k result of this project was measured on its files (RecBole's
# ml-100k.inter is u.data with a typed header; its item titles differ from u.item's).
# The local copies of the Amazon datasets are pinned by the checksums of their public releases (OpenP5 for Beauty,
# UniSRec for Scientific), verified here; the official Amazon dumps' checksums are not known, so those sources are
# used only with allow_unverified=True.
SOURCES: dict[str, tuple[Source, ...]] = {
    "ml-100k": (
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
        Source(
            name="grouplens",
            archive=ZipUrl(
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                size=4_924_029,
            ),
            interactions=KeptFile("ml-100k/u.data", sha256=None),
            items=KeptFile("ml-100k/u.item", sha256=None),
            format="movielens-100k",
        ),
    ),
    "ml-1m": (
        Source(
            name="grouplens",
            archive=ZipUrl(
                "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                size=5_917_549,
            ),
            interactions=KeptFile("ml-1m/ratings.dat", sha256=None),
            items=KeptFile("ml-1m/movies.dat", sha256=None),
            format="movielens-1m",
        ),
    ),
    "amazon14-beauty": (
        Source(
            name="local",
            archive=LocalDir("amazon14-beauty"),
            interactions=KeptFile(
                "user_sequence.txt", sha256="47197cbee7bdc1896926e10d96b807dce0aecb9a1f0c2ccc887c21090237c9b7"
            ),
            items=KeptFile(
                "products_lookup.csv", sha256="65133eca0615999df67fc5b26a93a7da762e53e613a083fd6b9e37174896d128"
            ),
            extra=(
                KeptFile(
                    "item_id_to_int.json", sha256="3d1a1d362c7daeddf616057fae8fa24af9d70902fdaf4631852231a9953afa50"
                ),
            ),
            format="p5",
            items_format="csv",
            item_columns={"item": "global_product_id", "title": "name"},
            item_ids="item_id_to_int.json",
        ),
        Source(
            name="mcauley-2014",
            archive=FileUrls(_MCAULEY_2014),
            interactions=KeptFile("reviews_Beauty_5.json.gz", sha256=None),
            items=KeptFile("meta_Beauty.json.gz", sha256=None),
            format="amazon-2014",
        ),
    ),
    "amazon18-scientific": (
        Source(
            name="local",
            archive=LocalDir("amazon18-scientific"),
            interactions=KeptFile(
                "Scientific.train.inter", sha256="7284f6489d956fa20c9b64ffc84569264320edba5c3bc2fcb22db2ea083a1163"
            ),
            items=KeptFile(
                "Scientific.text", sha256="95887e6bda76e54f59b71b566320520d5da74e21d3b6ff8f20bfb6e8e84aa831"
            ),
            extra=(
                KeptFile(
                    "Scientific.valid.inter", sha256="5f37c84d3b54617cdc46638c89dfe8741c7efc4987acd5eb64de2cbd4311f46c"
                ),
                KeptFile(
                    "Scientific.test.inter", sha256="546da7e5f44002b4518d7fd58066684bc09613f76c240914e16976d57cfe7083"
                ),
                KeptFile(
                    "Scientific.item2index", sha256="896ab1017508cf20834d3d0537da9f8f624324223a835af272a98ba16f8c087a"
                ),
                KeptFile(
                    "Scientific.user2index", sha256="f0162b1a3a0c6b7e816f86208e7b36f65d6787923126f9558fbc6d368e4c4974"
                ),
            ),
            format="recbole-splits",
            items_format="recbole",
            # UniSRec's item text, "title. categories. brand.", is the only text there is: read as the title.
            item_columns={"item": "item_id", "title": "text"},
        ),
        Source(
            name="mcauley-2018",
            archive=FileUrls(_MCAULEY_2018),
            interactions=KeptFile("categoryFilesSmall/Industrial_and_Scientific_5.json.gz", sha256=None),
            items=KeptFile("metaFiles2/meta_Industrial_and_Scientific.json.gz", sha256=None),
            format="amazon-2018",
        ),
    ),
}

PUBLISHED: dict[str, PublishedCounts] = {
    "ml-100k": PublishedCounts(943, 1_682, 100_000, "GroupLens ml-100k README"),
    "ml-1m": PublishedCounts(6_040, 3_706, 1_000_209, "GroupLens ml-1m README (3,706 of its 3,952 movies are rated)"),
    "amazon14-beauty": PublishedCounts(
        22_363, 12_101, 198_502, "S3-Rec / P5 / LLM-ESR papers (Amazon 2014 Beauty, 5-core)"
    ),
    "amazon18-scientific": PublishedCounts(
        8_442, 4_385, 59_427, "UniSRec paper (Amazon 2018 Industrial_and_Scientific, its processing)"
    ),
}
