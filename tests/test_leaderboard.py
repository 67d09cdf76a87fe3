"""Leaderboard aggregation from fixture metrics files: mean ± std over seeds, the improvement column,
tuned rows from a sweep's seed re-runs (never its trials), and non-empty PNG plots."""

import json
from pathlib import Path

import pandas as pd
import pytest

from raylrec.cli import main
from raylrec.errors import RaylrecError
from raylrec.leaderboard import build_leaderboard, collect_records, leaderboard_frame


def metrics(ndcg10: float, warm: float = 0.2, cold: float = 0.05) -> dict:
    full = {
        f"{m}@{k}": ndcg10 * (k / 10) ** (0.5 if m == "hr" else 0.3) for m in ("hr", "ndcg") for k in (1, 5, 10, 20)
    }
    full["ndcg@10"] = ndcg10
    return {
        "full": {**full, "n": 943},
        "sampled_19": {"hr@1": ndcg10 * 2, "ndcg@5": ndcg10 * 3, "n": 943},
        "sampled_100": {"hr@1": ndcg10, "ndcg@5": ndcg10, "n": 943},
        "buckets": {
            "warm_cold": {
                "warm": {"ndcg@10": warm, "hr@10": 2 * warm, "n": 300},
                "median": {"ndcg@10": (warm + cold) / 2, "hr@10": warm + cold, "n": 300},
                "cold": {"ndcg@10": cold, "hr@10": 2 * cold, "n": 343},
            }
        },
    }


def write_stage(
    stage_dir: Path, model: str, ndcg10: float, params: int = 1000, wall: float = 12.0, config: dict | None = None, **kw
) -> None:
    stage_dir.mkdir(parents=True)
    record = {
        "model": model,
        "split": "test",
        "metrics": metrics(ndcg10, **kw),
        "data_fingerprint": "fp1",
        "dataset": "ml-100k",
        "config": config or {"train": {"lr": 0.002}},
        "trainable_params": params,
    }
    (stage_dir / "metrics_test.json").write_text(json.dumps(record))
    (stage_dir / "DONE.json").write_text(json.dumps({"fit_wall_s": wall}))


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    a, b = tmp_path / "seed-a", tmp_path / "seed-b"
    write_stage(a / "models" / "sasrec", "sasrec", 0.10, params=200_000, wall=10)
    write_stage(b / "models" / "sasrec", "sasrec", 0.12, params=200_000, wall=14)
    write_stage(a / "models" / "pad", "pad", 0.132, warm=0.25, cold=0.10)
    write_stage(b / "models" / "pad", "pad", 0.132, warm=0.25, cold=0.10)
    sweep = a / "sweeps" / "pad"
    write_stage(sweep / "seeds" / "seed-2020" / "models" / "pad", "pad", 0.14)
    write_stage(sweep / "seeds" / "seed-2021" / "models" / "pad", "pad", 0.16)
    write_stage(sweep / "trials" / "abc12_00000" / "models" / "pad", "pad", 0.99)  # a trial: never on the board
    (sweep / "seeds" / "seed-2020" / "models" / "sasrec-bce").symlink_to(a / "models" / "sasrec")  # shared
    (sweep / "best.json").write_text(json.dumps({"best_params": {"align.gamma": 0.2, "experts.num_buckets": 10}}))
    (sweep / "sweep.yaml").write_text("method: pad\nmetric: valid_ndcg@10\nmode: max\n")
    pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(6)],
            "status": ["COMPLETED"] * 4 + ["EARLY_STOPPED", "ERROR"],
            "valid_ndcg@10": [0.10, 0.12, 0.11, 0.13, 0.09, None],
            "param:align.gamma": [0.1, 0.2, 0.1, 0.2, 0.5, 1.0],
            "param:experts.num_buckets": [5, 5, 10, 10, 10, 10],
        }
    ).to_csv(sweep / "sweep_results.csv", index=False)
    return [a, b]


def test_rows_are_mean_and_std_over_seeds_with_improvement_over_sasrec(runs):
    frame = leaderboard_frame(collect_records(runs)).set_index("method")
    assert set(frame.index) == {"SASRec", "PAD", "PAD (tuned)"}
    sasrec, tuned = frame.loc["SASRec"], frame.loc["PAD (tuned)"]
    assert sasrec["n"] == 2 and sasrec["ndcg@10"] == pytest.approx(0.11)
    assert sasrec["ndcg@10_std"] == pytest.approx(0.0141421, abs=1e-6)  # sample std of 0.10, 0.12
    assert frame.loc["PAD", "improv_ndcg@10"] == pytest.approx(20.0)  # (0.132 - 0.11) / 0.11
    assert tuned["n"] == 2 and tuned["ndcg@10"] == pytest.approx(0.15)  # seeds only; the 0.99 trial is ignored
    assert sasrec["cand_hit@1"] == pytest.approx(0.22)  # Hit@1 over the 20 stored candidates (sampled_19)
    assert frame.loc["PAD", "cold_ndcg@10"] == pytest.approx(0.10)
    assert sasrec["wall_s"] == pytest.approx(12) and sasrec["trainable_params"] == 200_000
    assert json.loads(tuned["tuned_params"]) == {"align.gamma": 0.2, "experts.num_buckets": 10}


def test_markdown_csv_and_plots_are_written(runs, tmp_path):
    result = build_leaderboard(runs, tmp_path / "board")
    markdown = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "| SASRec | 2 |" in markdown and "0.1100 ± 0.0141" in markdown and "+20.0%" in markdown
    assert "align.gamma=0.2" in markdown and "Hit@1 (20 cand.)" in markdown
    csv = pd.read_csv(tmp_path / "board" / "leaderboard.csv")
    assert {"hr@10", "ndcg@10_std", "improv_ndcg@10", "warm_ndcg@10", "config", "wall_s"} <= set(csv.columns)
    names = {p.name for p in result["plots"]}
    assert names == {"metrics.png", "warm_cold.png", "sweep_pad.png"}
    for png in result["plots"]:
        assert png.stat().st_size > 5_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_and_empty_input(runs, tmp_path, capsys):
    assert main(["leaderboard", *map(str, runs), "--out", str(tmp_path / "cli"), "--no-plots"]) == 0
    assert "PAD (tuned)" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(RaylrecError, match="no metrics_test.json"):
        collect_records([tmp_path / "empty"])


def test_candidate_protocol_rows_get_their_own_table(runs):
    """A-LLMRec's evaluation (stored candidates, a user sample) is never mixed with full-ranking rows."""
    out = runs[0] / "models" / "allmrec-eval"
    out.mkdir(parents=True)

    def candidate_record(model, ndcg5, gen=None):
        metrics = {
            "sampled_19": {"hr@1": ndcg5 / 2, "hr@5": ndcg5 * 1.5, "ndcg@5": ndcg5, "ndcg@10": ndcg5 * 1.1, "n": 120},
            "buckets": {"warm_cold": {"warm": {"ndcg@5": ndcg5 * 1.2}, "cold": {"ndcg@5": ndcg5 * 0.5}}},
        }
        if gen is not None:
            metrics["generation"] = {
                "all": {"hit@1": gen, "n": 120},
                "warm": {"hit@1": gen, "n": 50},
                "cold": {"hit@1": None, "n": 0},
            }
        return {"model": model, "metrics": metrics, "data_fingerprint": "fp1", "dataset": "ml-100k", "config": {}}

    (out / "metrics_test_backbone.json").write_text(json.dumps(candidate_record("sasrec-bce", 0.40)))
    collapsed = "stage 2 projected tokens collapsed: projected_e rows have mean pairwise cosine 0.994 > 0.95"
    flagged = {**candidate_record("allmrec-stage2[e]", 0.50, gen=0.3), "warnings": [collapsed]}
    (out / "metrics_test_e.json").write_text(json.dumps(flagged))
    (out / "metrics_test_q.json").write_text(json.dumps(candidate_record("allmrec-stage2[q]", 0.44, gen=0.2)))
    frame = leaderboard_frame(collect_records(runs)).set_index("method")
    assert frame.loc["SASRec", "protocol"] == "full"
    assert frame.loc["A-LLMRec", "protocol"] == "candidates" and frame.loc["A-LLMRec", "users"] == 120
    assert frame.loc["A-LLMRec", "gen_hit@1"] == pytest.approx(0.3)
    assert frame.loc["A-LLMRec (SBERT)", "baseline"] == "SASRec (BCE) (same users)"
    assert frame.loc["A-LLMRec", "improv_cand_ndcg@5"] == pytest.approx(25.0)
    assert frame.loc["SASRec", "improv_ndcg@10"] == 0  # the full-ranking table keeps its own baseline
    markdown = build_leaderboard(runs, runs[0] / "board", plots=False)["markdown"]
    assert "candidate protocol: 120 users" in markdown and "| A-LLMRec (SBERT) | 1 |" in markdown
    # a stage's own warning (A-LLMRec's collapse check) marks its row and is printed under the table and in the CSV
    assert "| A-LLMRec ⚠ | 1 |" in markdown and f"- ⚠ A-LLMRec: {collapsed}" in markdown
    assert frame.loc["A-LLMRec", "warnings"] == collapsed and frame.loc["A-LLMRec (SBERT)", "warnings"] == ""


def write_ranks_for(stage_dir: Path, full_ranks, role: str = "method", backbone: str | None = None) -> None:
    """Give a fixture stage stored per-user test ranks and its lineage fields."""
    import numpy as np

    from raylrec.eval.ranks import write_ranks

    full_ranks = np.asarray(full_ranks)
    users = np.arange(len(full_ranks))
    write_ranks(stage_dir / "ranks_test.parquet", users, users + 1, users % 10, {"full": full_ranks})
    record = json.loads((stage_dir / "metrics_test.json").read_text())
    record.update(role=role, backbone=backbone)
    (stage_dir / "metrics_test.json").write_text(json.dumps(record))


def test_paired_intervals_against_the_strongest_id_model_and_the_own_backbone(tmp_path):
    import numpy as np

    run = tmp_path / "run"
    users = 200
    rare = (np.arange(users) % 10) < 2
    write_stage(run / "models" / "sasrec", "sasrec", 0.12)
    write_ranks_for(run / "models" / "sasrec", np.where(rare, 30, 0), role="id_model")  # hits all but the rare
    write_stage(run / "models" / "sasrec-bce", "sasrec-bce", 0.08)
    write_ranks_for(run / "models" / "sasrec-bce", np.full(users, 30), role="id_model")  # hits nobody
    write_stage(run / "models" / "pad", "pad", 0.10)
    write_ranks_for(run / "models" / "pad", np.where(rare, 0, 30), backbone="sasrec-bce")  # hits only the rare

    frame = leaderboard_frame(collect_records([run])).set_index("method")
    pad = frame.loc["PAD"]
    assert pad["best_id"] == "SASRec" and pad["backbone_label"] == "SASRec (BCE)"
    assert pad["delta_ndcg@10_vs_best_id"] == pytest.approx(0.2 - 0.8)
    assert pad["delta_ndcg@10_vs_best_id_high"] < 0  # loses overall …
    assert pad["rare_delta_ndcg@10_vs_best_id"] == pytest.approx(1.0)  # … and wins on every rare user
    assert pad["rare_users"] == 40
    assert pad["delta_ndcg@10_vs_backbone"] == pytest.approx(0.2) and pad["delta_ndcg@10_vs_backbone_low"] > 0
    assert np.isnan(frame.loc["SASRec", "delta_ndcg@10_vs_best_id"])  # the reference itself
    markdown = build_leaderboard([run], tmp_path / "board", plots=False)["markdown"]
    assert "paired differences" in markdown and "-0.6000 [" in markdown and "**↓**" in markdown


def test_rows_without_stored_ranks_get_no_interval(runs):
    frame = leaderboard_frame(collect_records(runs))
    assert "delta_ndcg@10_vs_best_id" not in frame or frame["delta_ndcg@10_vs_best_id"].isna().all()
    assert "paired differences" not in build_leaderboard(runs, runs[0] / "board", plots=False)["markdown"]


def test_same_label_different_configs_are_separate_rows_and_moved_aside_runs_are_not_read(tmp_path):
    """Two seeds of one config average into one row (their seeds and run-directory paths differ); a third run with
    the same label and another learning rate gets its own row; a folder moved aside by --force is never read."""
    config = lambda lr, seed, run: {  # noqa: E731
        "train": {"lr": lr, "seed": seed, "cpus_per_worker": 1.0},
        "method": {"run_dir": str(tmp_path / run), "pretrained_dir": f"/x/{run}/models/b"},
    }
    write_stage(tmp_path / "a" / "models" / "sasrec", "sasrec", 0.10, config=config(0.002, 1, "a"))
    write_stage(tmp_path / "b" / "models" / "sasrec", "sasrec", 0.12, config=config(0.002, 2, "b"))
    write_stage(tmp_path / "c" / "models" / "sasrec", "sasrec", 0.30, config=config(0.01, 1, "c"))
    write_stage(tmp_path / "a" / "models" / "sasrec.old-20261204-151500", "sasrec", 0.99, config=config(0.002, 1, "a"))
    frame = leaderboard_frame(collect_records([tmp_path / r for r in "abc"])).set_index("method")
    assert len(frame) == 2 and all(label.startswith("SASRec [config ") for label in frame.index)
    assert sorted(frame["n"]) == [1, 2]
    averaged = frame[frame["n"] == 2].iloc[0]
    assert averaged["ndcg@10"] == pytest.approx(0.11)
    assert frame[frame["n"] == 1].iloc[0]["ndcg@10"] == pytest.approx(0.30)
