"""Multilayer perceptron for regression and classification."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class MLP(nn.Module):
    """Linear -> [norm] -> activation -> [dropout] for each hidden layer, then a linear head.

    Example:
        >>> model = MLP(n_inputs=3, hidden=(16, 16), n_outputs=1)
        >>> model(torch.zeros(4, 3)).shape
        torch.Size([4, 1])
    """

    def __init__(
        self,
        n_inputs: int,
        hidden: Sequence[int],
        n_outputs: int,
        activation: str = "relu",
        dropout: float = 0.0,
        norm: str = "none",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(size))
            elif norm == "layer":
                layers.append(nn.LayerNorm(size))
            layers.append(_ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
