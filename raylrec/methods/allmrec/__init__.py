"""A-LLMRec (All-round LLM-based Recommender; KDD'24): both stages on the shared Ray Train loop.

config.py (typed settings, ablation switches), stage1.py (collaborative ↔ text alignment with a fine-tuned
SBERT), prompt.py (Figure-3 prompt with placeholder slots, splicing through `inputs_embeds`), stage2.py
(projectors into a frozen LLM, DeepSpeed), inference.py (greedy generation Hit@1 and log-likelihood ranking on
Ray workers), pipeline.py (all steps with skip/resume).
"""
