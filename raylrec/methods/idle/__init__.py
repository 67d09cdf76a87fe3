"""IDLE-Adapter (Yu et al., "Break the ID-Language Barrier"): a frozen ID model's user vector enters every layer of
a frozen language model as gated, layer-wise virtual key/value tokens; only the adapter and the item head train.

config.py (typed settings), prompt.py (hard prompt, §4.1), adapter.py (eq. 5–7), injection.py (eq. 8–11: key/value
prefixes on encoder and decoder backbones), mmd.py (eq. 12), model.py (the trained module), recipe.py (eq. 13–16 on
the shared Ray Train loop), pipeline.py (ID model stage → IDLE stage). Choices the paper leaves open: docs/idle.md.
"""

from raylrec.methods.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="idle",
        config_class="raylrec.methods.idle.config:IdleConfig",
        default_preset="idle",
        runner="raylrec.methods.idle.pipeline:run_idle",
        description="IDLE-Adapter: a frozen ID model's user vector as layer-wise virtual tokens in a frozen LLM",
        presets=("idle", "idle-paper"),
        display_names={
            "idle": "IDLE-Adapter",
            # bench/idle.py's variant stages
            "idle-smollm2": "IDLE-Adapter (smollm2-135m)",
            "idle-no-layerwise": "IDLE-Adapter w/o LayerWise",
            "idle-no-refinement": "IDLE-Adapter w/o Refinement",
            "idle-no-distribution": "IDLE-Adapter w/o Distribution",
        },
        tune_prerequisites="raylrec.methods.idle.pipeline:tune_prerequisites",
        tune_frozen_prefixes=("data.", "eval.", "run_dir", "id_model."),
    )
)
