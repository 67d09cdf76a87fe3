"""The real Amazon copies kept on the project's machines (never in the repo), read as a user would.

Runs only where the copies exist: $RAYLREC_DATASETS_DIR, else `../shared/datasets` next to the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raylrec.cli import main
from raylrec.data.fetch import fetch_dataset
from raylrec.data.readers import read_items
from raylrec.data.sources import DATASETS_DIR_VARIABLE
from raylrec.data.verify import verify_dataset

SHARED = Path(os.environ.get(DATASETS_DIR_VARIABLE) or Path(__file__).resolve().parents[2] / "shared" / "datasets")
pytestmark = pytest.mark.skipif(
    not (SHARED / "amazon14-beauty").is_dir(),
    reason=f"no local dataset copies at {SHARED} (set ${DATASETS_DIR_VARIABLE})",
)


@pytest.mark.parametrize("name", ["amazon14-beauty", "amazon18-scientific"])
def test_shared_copy_matches_the_published_statistics(name, tmp_path):
    _, checks = verify_dataset(name, tmp_path, source_dir=SHARED)
    assert {c.what: c.found for c in checks} == {c.what: c.published for c in checks}


def test_every_beauty_item_has_its_row_in_the_title_table(tmp_path):
    raw = fetch_dataset("amazon14-beauty", tmp_path, source_dir=SHARED)
    items = read_items(raw.items_path, raw.items_format, raw.item_columns, id_map=raw.item_ids_path)
    assert items.num_rows == 12_101 and items["title"].null_count == 7  # 7 empty titles, as the README says


def test_verify_command(tmp_path, capsys):
    assert (
        main(["--cache-dir", str(tmp_path), "data", "verify", "amazon18-scientific", "--source-dir", str(SHARED)]) == 0
    )
    assert "| interactions | 59,427 | 59,427 | ok |" in capsys.readouterr().out
