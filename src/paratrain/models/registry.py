"""Build a torch module from a ModelConfig and the shape of the encoded data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from paratrain.config import ModelConfig
from paratrain.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a trained model: the config and the data's shape."""

    config: ModelConfig
    feature_names: tuple[str, ...]
    n_outputs: int

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        config["hidden"] = list(config["hidden"])
        return {"config": config, "feature_names": list(self.feature_names), "n_outputs": self.n_outputs}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelSpec":
        return cls(ModelConfig(**values["config"]), tuple(values["feature_names"]), int(values["n_outputs"]))


def build_model(spec: ModelSpec) -> nn.Module:
    """Create the (untrained) module described by ``spec``."""
    config = spec.config
    if config.model == "mlp":
        from paratrain.models.mlp import MLP

        return MLP(len(spec.feature_names), config.hidden, spec.n_outputs, config.activation, config.dropout, config.norm)
    from paratrain.models.families import family_formula
    from paratrain.models.formula import FormulaModel

    if spec.n_outputs != 1:
        raise ConfigError(f"model='formula' is for regression (one output), but the task has {spec.n_outputs} classes")
    formula, init = (config.formula, {}) if config.formula else family_formula(config.family, config.degree)
    init = {**init, **config.init}
    return FormulaModel(formula, list(spec.feature_names), init=init)
