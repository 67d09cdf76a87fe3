"""PAD (Pre-train, Align, Disentangle; SIGIR'25): phase recipes on the shared Ray Train loop.

config.py (typed settings), mmd.py (kernels, MK-MMD, InfoNCE), towers.py (item towers and experts),
phase.py (what the phases share), alignment.py (phase 2), experts.py (phase 3 and gating), baselines.py
(Hybrid, MoRec), kendall.py (Kendall-τ discrepancy tool), pipeline.py (all phases with skip/resume).
"""

from raylrec.methods.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="pad",
        config_class="raylrec.methods.pad.config:PadConfig",
        default_preset="pad",
        runner="raylrec.methods.pad.pipeline:run_pad",
        description="PAD: pre-train, align (MK-MMD), disentangle (frequency-gated experts)",
        presets=("pad", "pad-paper"),
        display_names={
            "pad": "PAD",
            "pad-align": "PAD phase 2 (alignment expert)",
            "hybrid": "Hybrid",
            "morec": "MoRec",
        },
        tune_prerequisites="raylrec.methods.pad.pipeline:tune_prerequisites",
        tune_frozen_prefixes=("data.", "eval.", "run_dir", "pretrain.", "text.", "baselines"),
    )
)
