"""A-LLMRec's stage 2 resumed from its DeepSpeed (ZeRO-2, two CPU workers) checkpoint, and its inference keyed on
the stage-2 artifact: reused while stage 2 is unchanged, refused once stage 2 was retrained, rerun with --force
(issue 19 item 4). Tiny random-weight models from test_allmrec's fixtures."""

from __future__ import annotations

import logging

import pandas as pd
import pytest
from test_allmrec import backbone_dir, stage1_dir, stage2_config, tiny_models, titled_data_dir  # noqa: F401

from raylrec.errors import ArtifactError
from raylrec.eval.evaluator import EvalConfig
from raylrec.methods.allmrec.config import InferenceConfig
from raylrec.methods.allmrec.inference import run_inference
from raylrec.methods.allmrec.stage2 import Stage2Recipe
from raylrec.train.stage import StageJob, run_stage


def test_deepspeed_stage2_resumes_and_inference_reruns_only_after_stage2_changed(
    ray_session, tiny_models, titled_data_dir, backbone_dir, stage1_dir, caplog
):
    config = stage2_config(tiny_models, train_users=8)  # ZeRO-2 on 2 workers
    eval_config = EvalConfig(num_negatives=[5], ks=[1, 5, 10], length_edges=[5, 10])
    run_dir = backbone_dir.parents[1]
    out = run_dir / "models" / "ds-resume"

    def stage2(max_epochs: int) -> StageJob:
        train = config.train.model_copy(update={"max_epochs": max_epochs, "patience": 50})
        recipe = Stage2Recipe("ds-resume", config.model_copy(update={"train": train}), backbone_dir, stage1_dir)
        return StageJob(recipe, train, eval_config, titled_data_dir, str(run_dir), "stage2")

    first_stage2 = run_stage(stage2(1))
    recipe = stage2(1).recipe
    inference = InferenceConfig(
        users=3, num_workers=1, cpus_per_worker=0.5, max_new_tokens=4, variants=["e"], compare_id_models=[]
    )
    evaluation = run_dir / "models" / "ds-resume-eval"

    def infer(force: bool = False) -> dict:
        return run_inference(
            recipe,
            titled_data_dir,
            out,
            backbone_dir,
            evaluation,
            inference,
            eval_config,
            seed=0,
            force=force,
            run_dir=str(run_dir),
        )

    first = infer()
    assert infer() == first  # same settings, same stage-2 artifact: reused

    # The driver died after the epoch-0 checkpoint, before the export; rerun asking for 2 epochs: it continues
    # from the DeepSpeed checkpoint (each worker's ZeRO partition) and trains epoch 1 only.
    before = pd.read_csv(out / "history.csv")
    (out / "DONE.json").unlink()
    resumed = run_stage(stage2(2))
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1] and resumed["final_metrics"]["epoch"] == 1
    pd.testing.assert_frame_equal(history.iloc[:1].reset_index(drop=True), before, check_dtype=False)
    assert resumed["stage_key"]["resume_fingerprint"] == first_stage2["stage_key"]["resume_fingerprint"]

    # Stage 2 changed: the old evaluation is never returned; --force reruns it on the new artifact.
    with pytest.raises(ArtifactError, match=r"ds-resume-eval.*<run>/models/ds-resume changed since then.*--force"):
        infer()
    with caplog.at_level(logging.WARNING, logger="raylrec.train.stage"):
        rerun = infer(force=True)
    assert "moved the earlier" in caplog.text and any(evaluation.parent.glob("ds-resume-eval.old-*"))
    assert rerun["stage_key"]["inputs"] != first["stage_key"]["inputs"]
    assert (evaluation / "metrics_test_e.json").exists() and infer() == rerun
