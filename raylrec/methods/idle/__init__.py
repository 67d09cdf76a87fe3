"""IDLE-Adapter (Yu et al., "Break the ID-Language Barrier"): a frozen ID model's user vector enters every layer of
a frozen language model as gated, layer-wise virtual key/value tokens; only the adapter and the item head train.

config.py (typed settings), prompt.py (hard prompt, §4.1), adapter.py (eq. 5–7), injection.py (eq. 8–11: key/value
prefixes on encoder and decoder backbones), mmd.py (eq. 12), model.py (the trained module), recipe.py (eq. 13–16 on
the shared Ray Train loop), pipeline.py (ID model stage → IDLE stage). Choices the paper leaves open: docs/idle.md.
"""
