"""PAD (Pre-train, Align, Disentangle; SIGIR'25): phase recipes on the shared Ray Train loop.

config.py (typed settings), mmd.py (kernels, MK-MMD, InfoNCE), towers.py (item towers and experts),
phase.py (what the phases share), alignment.py (phase 2), experts.py (phase 3 and gating), baselines.py
(Hybrid, MoRec), kendall.py (Kendall-τ discrepancy tool), pipeline.py (all phases with skip/resume).
"""
