"""A-LLMRec (All-round LLM-based Recommender; KDD'24): both stages on the shared Ray Train loop.

config.py (typed settings, ablation switches), stage1.py (collaborative ↔ text alignment with a fine-tuned
SBERT), prompt.py (Figure-3 prompt with placeholder slots, splicing through `inputs_embeds`), stage2.py
(projectors into a frozen LLM, DeepSpeed), inference.py (greedy generation Hit@1 and log-likelihood ranking on
Ray workers), pipeline.py (all steps with skip/resume).
"""

from raylrec.methods.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="allmrec",
        config_class="raylrec.methods.allmrec.config:ALLMRecConfig",
        default_preset="allmrec",
        runner="raylrec.methods.allmrec.pipeline:run_allmrec",
        description="A-LLMRec: CF ↔ text alignment (stage 1), projections into a frozen LLM (stage 2, DeepSpeed)",
        presets=("allmrec", "allmrec-long", "allmrec-paper"),
        stages=("stage1", "stage2", "inference"),
        # Selected on stage 2 (its per-epoch validation ranks the stored candidates by LLM likelihood).
        final_stage="raylrec.methods.allmrec.config:stage2_name",
        display_names={
            "allmrec": "A-LLMRec",
            "allmrec-sbert": "A-LLMRec (SBERT)",
            # its eval folder: item training counts on the same candidates
            "popularity": "Popularity (same users)",
        },
        # Its training stages' metrics rank only the stored candidates (the LLM scores no other item) although
        # written as full ranking; its `<name>-eval` folder holds the real evaluation.
        training_only_suffixes=("-stage1", "-stage2"),
        tune_prerequisites="raylrec.methods.allmrec.pipeline:tune_prerequisites",
        tune_frozen_prefixes=("data.", "eval.", "run_dir", "backbone."),
    )
)
