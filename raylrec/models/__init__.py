from raylrec.models.base import MODEL_REGISTRY, ModelConfig, SequentialRecommender, build_model

__all__ = ["MODEL_REGISTRY", "ModelConfig", "SequentialRecommender", "build_model"]
