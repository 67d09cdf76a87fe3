"""The LLM-enhanced methods and the ID backbones, each registered by name in raylrec/methods/registry.py.

Importing this package registers every method shipped with raylrec: each package's __init__.py makes one
`register_method` call (light: configs and runners are imported on use).
"""

from raylrec.methods import allmrec, id_models, idle, pad  # noqa: F401  (each registers itself)
