"""A stage fed a bad or missing artifact fails with a clear error naming it, and leaves earlier artifacts intact.
(Worker loss and re-submission are tested on a real cluster in test_cluster.py.)"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from raylrec.cli import main
from raylrec.data.prepared import PreparedData
from raylrec.errors import ArtifactError
from raylrec.pipeline import PipelineConfig, run_pipeline

GRU = {
    "name": "tiny-gru",
    "model": {"name": "gru4rec", "hidden_size": 8, "max_len": 6, "num_layers": 1, "inner_size": 8},
    "train": {"max_epochs": 1, "batch_size": 16},
}
SASREC = {
    "name": "tiny-sasrec",
    "model": {"name": "sasrec", "hidden_size": 8, "max_len": 6, "num_layers": 1, "num_heads": 2, "inner_size": 8},
    "train": {"max_epochs": 1, "batch_size": 16},
}


def pipeline(run_dir: Path, synthetic_log: Path, stages: list[dict]) -> dict:
    # The same data settings as conftest's prepared_dir, so its prepared copy is accepted as this run's.
    return {
        "run_dir": run_dir.as_uri(),
        "data": {
            "dataset": "synthetic",
            "interactions_path": str(synthetic_log),
            "format": "csv",
            "negatives": [5, 10],
            "num_blocks": 2,
        },
        "eval": {"num_negatives": [5], "length_edges": [5, 10]},
        "stages": stages,
    }


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_first_stage(ray_session, prepared_dir, synthetic_log, tmp_path_factory) -> Path:
    """A run directory (a file:// URI) whose data and first stage are done."""
    run = tmp_path_factory.mktemp("ft") / "run"
    shutil.copytree(prepared_dir, run / "data" / "synthetic")
    run_pipeline(PipelineConfig.model_validate(pipeline(run, synthetic_log, [GRU])))
    assert (run / "models" / "tiny-gru" / "DONE.json").exists()
    return run


@pytest.mark.parametrize(
    "damage, artifact, message",
    [
        ("truncate", "sequences.parquet", "unreadable"),
        ("garbage", "data_report.json", "unreadable"),
        ("delete", "negatives.parquet", "missing negatives.parquet"),
    ],
)
def test_bad_or_missing_artifact_fails_clearly_and_keeps_earlier_artifacts(
    finished_first_stage, synthetic_log, tmp_path, capsys, damage, artifact, message
):
    run = tmp_path / "run"
    shutil.copytree(finished_first_stage, run)
    target = run / "data" / "synthetic" / artifact
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    elif damage == "garbage":
        target.write_text('{"config": ')
    else:
        target.unlink()
    before = snapshot(run)
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline(run, synthetic_log, [GRU, SASREC])))

    code = main(["run", "--config", str(config)])

    assert code == 1
    err = capsys.readouterr().err
    assert str(target) in err or (artifact in err and str(target.parent) in err), err
    assert message in err and "Traceback" not in err
    assert snapshot(run) == before  # nothing earlier was touched, and the failing stage wrote nothing
    assert not (run / "models" / "tiny-sasrec").exists()


def test_unreadable_artifact_error_names_the_file(finished_first_stage, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(finished_first_stage / "data" / "synthetic", data)
    (data / "items.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ArtifactError, match=r"items\.parquet is unreadable"):
        PreparedData(data)
