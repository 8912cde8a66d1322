"""Models: MLPs and formula models, built from a ModelConfig."""

from paratrain.models.registry import ModelSpec, build_model

__all__ = ["ModelSpec", "build_model"]
