"""The ID-based sequential recommenders (raylrec/models/base.py's interface), one per file; each registers itself
by name, and importing this package registers them all."""

from raylrec.errors import RaylrecError
from raylrec.models import gru4rec, sasrec  # noqa: F401  (each registers itself in MODEL_REGISTRY)
from raylrec.models.base import MODEL_REGISTRY, ModelConfig, SequentialRecommender


def build_model(num_items: int, config: ModelConfig) -> SequentialRecommender:
    if config.name not in MODEL_REGISTRY:
        raise RaylrecError(f"unknown model {config.name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    return MODEL_REGISTRY[config.name](num_items, config)
