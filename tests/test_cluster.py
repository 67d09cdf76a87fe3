"""raylrec on a real (one-machine) Ray cluster: `ray start --head` on 127.0.0.1 with its own temp dir, ports and
auth token; jobs submitted with `ray job submit`; dashboard metrics scraped from the Prometheus endpoint; a Ray
Train worker killed by PID mid-run. The cluster is stopped by the PIDs it started, also when a test fails."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import LocalRayCluster

EPOCHS = 8
TINY_SASREC = {
    "name": "sasrec",
    "hidden_size": 16,
    "max_len": 8,
    "num_layers": 1,
    "num_heads": 2,
    "inner_size": 16,
    "dropout": 0.1,
    "attn_dropout": 0.1,
}
# Two DDP workers, so a killed worker exercises the per-rank random state in the checkpoint.
TINY_TRAIN = {
    "max_epochs": EPOCHS,
    "patience": 50,
    "batch_size": 16,
    "lr": 0.01,
    "num_workers": 2,
    "cpus_per_worker": 0.5,
    "seed": 7,
}
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
METRIC_LINE = re.compile(r"^(ray_raylrec_\w+)\{([^}]*)\}\s+(\S+)$", re.M)
# On a shared 2-core machine a job takes 2-8 minutes; pytest-timeout's 600 s would also count fixture setup.
pytestmark = pytest.mark.timeout(1800)
TOLERANCE = 1e-6  # same seed, same world size, CPU, one thread: the restored run is expected to be exact


def write_job_config(root: Path, log: Path, stages: list[dict], side_by_side: bool = True) -> Path:
    config = {
        "run_dir": (root / "run").as_uri(),  # a file:// URI run directory, resolved through pyarrow
        "data": {
            "dataset": "synthetic",
            "interactions_path": str(log),
            "format": "csv",
            "negatives": [5],
            "num_blocks": 2,
        },
        "eval": {"num_negatives": [5], "length_edges": [5, 10]},
        "stages": stages,
        "side_by_side": side_by_side,
    }
    path = root / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def sasrec_stage() -> dict:
    return {"name": "sasrec", "model": TINY_SASREC, "train": TINY_TRAIN}


def complete_checkpoints(stage_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in (stage_dir / "train").glob("checkpoint_*")
        if (p / "training_state.pt").exists() and (p / "best_model.pt").exists()
    )


def runtime_env(cluster) -> dict:
    # RAY_ADDRESS for every process of the job: with several Ray instances on one host (other people's), Ray
    # Train's placement-group cleaner cannot auto-detect which one is ours.
    return {
        "env_vars": {"OMP_NUM_THREADS": "1", "RAY_ADDRESS": f"127.0.0.1:{cluster.ports['gcs']}"},
        "excludes": ["runs/", "bench/", "tests/"],
    }


def registered_epoch(stage_dir: Path) -> int:
    """The epoch of the newest checkpoint Ray Train's controller has registered (-1: none yet). A worker's report
    is durable once the controller has polled it; a checkpoint folder alone may still be unregistered."""
    try:
        snapshot = json.loads((stage_dir / "train" / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    return {(name, labels): float(value) for name, labels, value in METRIC_LINE.findall(text)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalRayCluster(tmp_path_factory.mktemp("cluster"), num_cpus=2)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def jobs(cluster, synthetic_log, tmp_path_factory):
    """Two identical pipeline jobs submitted together with `ray job submit` (the cluster has room for both):
    `baseline` runs undisturbed; in `killed`, one of the two Ray Train workers — found through Ray's state API —
    is SIGKILLed by PID once two epochs' checkpoints exist. Meanwhile the Prometheus endpoint is scraped
    (a finished worker's gauges may be dropped by its node's agent)."""
    roots = {name: tmp_path_factory.mktemp(f"job-{name}") for name in ("baseline", "killed")}
    started = time.monotonic()
    for name, root in roots.items():
        config = write_job_config(root, synthetic_log, [sasrec_stage()])
        cluster.submit(["python", "jobs/run_pipeline.py", "--config", str(config)], name, runtime_env(cluster))
    stage_dir = roots["killed"] / "run" / "models" / "sasrec"
    events: dict = {"metrics": {}, "status": {}}
    while len(events["status"]) < len(roots):
        now = time.monotonic()
        assert now - started < 900, f"jobs did not finish: {events}"
        for name in roots:
            if name not in events["status"] and (status := cluster.job_status(name)) in TERMINAL:
                events["status"][name] = status
                events[f"{name}_wall_s"] = now - started
        try:
            events["metrics"].update(parse_metrics(cluster.scrape_metrics()))
        except OSError:
            pass
        if "victim" not in events and "killed" not in events["status"]:
            if registered_epoch(stage_dir) >= 1:  # epochs 0 and 1 checkpointed: kill during epoch 2
                workers = [
                    a for a in cluster.alive_actors("RayTrainWorker") if a.get("job_id") == killed_job_id(cluster)
                ]
                assert len(workers) == 2, workers
                events["victim"] = workers[-1]["pid"]
                events["killed_at"] = time.monotonic()
                os.kill(events["victim"], signal.SIGKILL)
                cluster.known_pids.discard(events["victim"])
        elif "victim" in events and "restarted_at" not in events:
            pids = {
                a["pid"] for a in cluster.alive_actors("RayTrainWorker") if a.get("job_id") == killed_job_id(cluster)
            }
            if len(pids) == 2 and events["victim"] not in pids:
                events["restarted_at"] = time.monotonic()
        cluster.track_pids()
        time.sleep(0.3 if "victim" not in events else 1)
    events["killed_finished_at"] = started + events["killed_wall_s"]
    for _ in range(5):  # the last epoch's gauges may still be on their way
        if "ray_raylrec_train_epoch" in {name for name, _ in events["metrics"]}:
            break
        time.sleep(1)
        events["metrics"].update(parse_metrics(cluster.scrape_metrics()))
    events["status_cli"] = cluster.ray("job", "status", "--address", cluster.dashboard_url, "baseline").stdout
    events["logs"] = {
        name: cluster.ray("job", "logs", "--address", cluster.dashboard_url, name).stdout for name in roots
    }
    events["run"] = {name: root / "run" for name, root in roots.items()}
    for name, root in roots.items():
        (root / "job.log").write_text(events["logs"][name])
    print(
        f"\njobs: {events['status']}, baseline {events['baseline_wall_s']:.1f} s, "
        f"killed {events['killed_wall_s']:.1f} s\n`ray job status baseline`: {events['status_cli'].strip()}"
    )
    return events


def killed_job_id(cluster) -> str:
    """The Ray job id (hex) behind the `killed` submission, to pick its workers out of the state API."""
    if not hasattr(cluster, "_killed_job_id"):
        cluster._killed_job_id = cluster.http_json("/api/jobs/killed")["job_id"]
    return cluster._killed_job_id


def test_pipeline_job_succeeds_with_artifacts_and_logs(cluster, jobs):
    logs = jobs["logs"]["baseline"]
    assert jobs["status"]["baseline"] == "SUCCEEDED", logs[-3000:]
    assert "succeeded" in jobs["status_cli"]
    run = jobs["run"]["baseline"]
    for artifact in (
        "data/synthetic/data_report.json",
        "data/synthetic/sequences.parquet",
        "results.md",
        "models/sasrec/DONE.json",
        "models/sasrec/model.safetensors",
        "models/sasrec/metrics_test.json",
        "models/sasrec/history.csv",
        "models/sasrec/item_embeddings.safetensors",
    ):
        assert (run / artifact).exists(), artifact
    assert complete_checkpoints(run / "models" / "sasrec"), "Ray Train wrote no checkpoint under the stage"
    done = json.loads((run / "models" / "sasrec" / "DONE.json").read_text())
    assert done["final_metrics"]["epoch"] == EPOCHS - 1
    assert "# pipeline" in logs and f"[sasrec] epoch {EPOCHS - 1}:" in logs and "| sasrec |" in logs
    assert f"artifacts: {run}" in logs and "resumed at epoch" not in logs
    assert cluster.token_file.read_text().strip() not in logs  # the cluster's secret never reaches job logs


def test_job_server_refuses_requests_without_the_token(cluster):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as refused:
        cluster.http_json("/api/jobs/", token=False)
    assert refused.value.code in (401, 403)


def test_dashboard_metrics_endpoint_has_raylrec_gauges(jobs):
    metrics = jobs["metrics"]
    by_name: dict[str, list[tuple[str, float]]] = {}
    for (name, labels), value in metrics.items():
        by_name.setdefault(name, []).append((labels, value))
    print(
        "\nraylrec metrics read from the endpoint:\n"
        + "\n".join(f"  {name}{{{labels}}} {value:g}" for (name, labels), value in sorted(metrics.items()))
    )
    for name in (
        "ray_raylrec_train_epoch",
        "ray_raylrec_train_progress",
        "ray_raylrec_valid_ndcg_at_10",
        "ray_raylrec_valid_metric",
        "ray_raylrec_train_loss",
    ):
        assert name in by_name, f"{name} not on the endpoint; saw {sorted(by_name)}"
        assert all('stage="sasrec"' in labels for labels, _ in by_name[name])
    assert all(0 <= v <= 1 for _, v in by_name["ray_raylrec_valid_ndcg_at_10"])
    assert all(0 < v <= 1 for _, v in by_name["ray_raylrec_train_progress"])
    assert max(v for _, v in by_name["ray_raylrec_train_epoch"]) >= 1


def test_killed_train_worker_restores_from_checkpoint_with_same_result(jobs):
    """One of the two Ray Train workers was SIGKILLed after two epochs' checkpoints: Ray Train restarts the
    worker group from the last checkpoint (FailureConfig.max_failures) and the run ends with the metrics of the
    undisturbed baseline (same seed; the checkpoint carries every rank's RNG state)."""
    logs = jobs["logs"]["killed"]
    assert "victim" in jobs, "no worker was killed"
    assert jobs["status"]["killed"] == "SUCCEEDED", logs[-3000:]
    resumed = re.findall(r"\[sasrec\] resumed at epoch (\d+) from checkpoint", logs)
    assert resumed and int(resumed[0]) >= 2, "the restarted workers did not restore the last checkpoint"
    killed_at = jobs["killed_at"]
    timings = {
        "restored_at_epoch": int(resumed[0]),
        "new_worker_group_after_kill_s": round(jobs["restarted_at"] - killed_at, 1) if "restarted_at" in jobs else None,
        "job_finished_after_kill_s": round(jobs["killed_finished_at"] - killed_at, 1),
        "killed_job_wall_s": round(jobs["killed_wall_s"], 1),
        "baseline_job_wall_s": round(jobs["baseline_wall_s"], 1),
    }
    print(f"\nkill-and-recover: {json.dumps(timings)}")

    expected = json.loads((jobs["run"]["baseline"] / "models" / "sasrec" / "DONE.json").read_text())
    got = json.loads((jobs["run"]["killed"] / "models" / "sasrec" / "DONE.json").read_text())
    for split in ("valid", "test"):
        for metric, value in expected[split].items():
            assert got[split][metric] == pytest.approx(value, abs=TOLERANCE), (split, metric)
    for key in ("epoch", "best_epoch", "best_valid_ndcg@10", "valid_ndcg@10", "train_loss"):
        assert got["final_metrics"][key] == pytest.approx(expected["final_metrics"][key], abs=TOLERANCE), key


def test_resubmitted_pipeline_skips_done_stages_and_resumes_the_stopped_one(cluster, jobs, synthetic_log, tmp_path):
    """`ray job stop` a two-stage pipeline during its second stage, then submit it again with the same run dir."""
    gru = {
        "name": "tiny-gru",
        "model": {"name": "gru4rec", "hidden_size": 8, "max_len": 6, "num_layers": 1, "inner_size": 8},
        "train": {"max_epochs": 1, "batch_size": 16},
    }
    # One stage after the other: side by side, the first stage may still be finishing when the second is stopped.
    config = write_job_config(tmp_path, synthetic_log, [gru, sasrec_stage()], side_by_side=False)
    run = tmp_path / "run"
    entrypoint = ["python", "jobs/run_pipeline.py", "--config", str(config)]
    cluster.submit(entrypoint, "interrupted", runtime_env(cluster))
    started = time.monotonic()
    while registered_epoch(run / "models" / "sasrec") < 1:
        assert cluster.job_status("interrupted") not in TERMINAL
        assert time.monotonic() - started < 600
        time.sleep(0.2)
    cluster.ray("job", "stop", "--address", cluster.dashboard_url, "interrupted")
    assert cluster.wait_job("interrupted") == "STOPPED"
    assert not (run / "models" / "sasrec" / "DONE.json").exists()
    gru_done = run / "models" / "tiny-gru" / "DONE.json"
    stamp = gru_done.stat().st_mtime_ns

    cluster.submit(entrypoint, "resubmitted", runtime_env(cluster))
    assert cluster.wait_job("resubmitted") == "SUCCEEDED", cluster.job_logs("resubmitted")[-3000:]
    logs = cluster.job_logs("resubmitted")
    assert gru_done.stat().st_mtime_ns == stamp and "stage tiny-gru already done" in logs
    assert re.search(r"resuming sasrec from .*checkpoint_", logs)
    resumed = re.findall(r"\[sasrec\] resumed at epoch (\d+)", logs)
    assert resumed and int(resumed[0]) >= 2
    # Resumed from the stopped job's checkpoint, it still ends where the undisturbed baseline did.
    expected = json.loads((jobs["run"]["baseline"] / "models" / "sasrec" / "DONE.json").read_text())
    got = json.loads((run / "models" / "sasrec" / "DONE.json").read_text())
    for metric, value in expected["test"].items():
        assert got["test"][metric] == pytest.approx(value, abs=TOLERANCE), metric


@pytest.mark.slow
def test_resubmitted_pipeline_resumes_stages_stopped_side_by_side(cluster, jobs, synthetic_log, tmp_path):
    """The main job's default: two stages training at once, both stopped mid-run by `ray job stop`; submitted
    again, each resumes from its own checkpoint and ends where the undisturbed baseline did (same config, seed)."""
    names = ("sasrec", "sasrec-twin")
    config = write_job_config(tmp_path, synthetic_log, [{**sasrec_stage(), "name": name} for name in names])
    run = tmp_path / "run"
    entrypoint = ["python", "jobs/run_pipeline.py", "--config", str(config)]
    cluster.submit(entrypoint, "interrupted-side-by-side", runtime_env(cluster))
    started = time.monotonic()
    while min(registered_epoch(run / "models" / name) for name in names) < 1:
        assert cluster.job_status("interrupted-side-by-side") not in TERMINAL
        assert time.monotonic() - started < 600
        time.sleep(0.2)
    cluster.ray("job", "stop", "--address", cluster.dashboard_url, "interrupted-side-by-side")
    assert cluster.wait_job("interrupted-side-by-side") == "STOPPED"
    assert not any((run / "models" / name / "DONE.json").exists() for name in names)

    cluster.submit(entrypoint, "resubmitted-side-by-side", runtime_env(cluster))
    assert cluster.wait_job("resubmitted-side-by-side") == "SUCCEEDED", cluster.job_logs("resubmitted-side-by-side")[
        -3000:
    ]
    logs = cluster.job_logs("resubmitted-side-by-side")
    expected = json.loads((jobs["run"]["baseline"] / "models" / "sasrec" / "DONE.json").read_text())
    for name in names:
        assert re.search(rf"resuming {name} from .*checkpoint_", logs), name
        resumed = re.findall(rf"\[{name}\] resumed at epoch (\d+)", logs)
        assert resumed and int(resumed[0]) >= 2, name
        got = json.loads((run / "models" / name / "DONE.json").read_text())
        for metric, value in expected["test"].items():
            assert got["test"][metric] == pytest.approx(value, abs=TOLERANCE), (name, metric)


@pytest.mark.slow
def test_encode_job_reports_items_encoded_on_the_metrics_endpoint(cluster, jobs, tmp_path):
    """`jobs/encode.py` on the cluster (a tiny local BERT over the baseline's prepared items): the encoder actors'
    counter and throughput gauge reach the Prometheus endpoint."""
    import torch
    from test_text import word_tokenizer
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-bert"
    tokenizer = word_tokenizer({"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]"})
    BertModel(
        BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    ).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data_dir = jobs["run"]["baseline"] / "data" / "synthetic"
    env = runtime_env(cluster)
    env["env_vars"]["HF_HUB_OFFLINE"] = "1"
    cluster.submit(
        [
            "python",
            "jobs/encode.py",
            "--data-dir",
            str(data_dir),
            "--run-dir",
            (tmp_path / "run").as_uri(),
            "--model",
            str(model_dir),
            "--pooling",
            "mean",
            "--template",
            "{item_id}",
            "--batch-size",
            "8",
        ],
        "encode",
        env,
    )
    seen: dict = {}
    started = time.monotonic()
    while (status := cluster.job_status("encode")) not in TERMINAL:
        seen.update(parse_metrics(cluster.scrape_metrics()))
        assert time.monotonic() - started < 600
        time.sleep(0.5)
    for _ in range(5):
        seen.update(parse_metrics(cluster.scrape_metrics()))
        time.sleep(1)
    assert status == "SUCCEEDED", cluster.job_logs("encode")[-3000:]
    encoded = [v for (name, _), v in seen.items() if name == "ray_raylrec_encode_items_total"]
    rates = [v for (name, _), v in seen.items() if name == "ray_raylrec_encode_items_per_second"]
    print(f"\nencode metrics: items_total {encoded}, items_per_second {rates}")
    assert encoded and sum(encoded) >= 40  # the synthetic dataset's 40 items (a counter per actor)
    assert rates and all(r > 0 for r in rates)
