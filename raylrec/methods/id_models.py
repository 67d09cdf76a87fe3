"""The ID backbones as registry entries: each trains as one stage (raylrec/train/stage.py) and is tuned as one."""

from __future__ import annotations

from typing import Any

from raylrec.methods.registry import MethodSpec, register_method


def stage_name(config: Any) -> str:
    return config.stage_name


def stage_seed(config: Any) -> int:
    return config.train.seed


for model, label in (("sasrec", "SASRec"), ("gru4rec", "GRU4Rec")):
    register_method(
        MethodSpec(
            name=model,
            kind="id_model",
            config_class="raylrec.train.config:StageConfig",
            default_preset=model,
            runner="raylrec.train.stage:run_id_stage",
            description=f"{label} (ID backbone)",
            presets=(model, "sasrec-bce") if model == "sasrec" else (model,),
            final_stage="raylrec.methods.id_models:stage_name",
            seed_of_trial="raylrec.methods.id_models:stage_seed",
            display_names={model: label, "sasrec-bce": "SASRec (BCE)"} if model == "sasrec" else {model: label},
        )
    )
