"""Cutting an MLP into consecutive pipeline stages, balanced by parameters or by measured time.

The unit of a cut is a block: one ``nn.Linear`` with the layers that follow it up to the next
linear layer (norm, activation, dropout), so no stage ever holds an activation alone. A stage
keeps the model's own layer keys ("0", "3", ...) inside a ``layers`` Sequential, so its state
dict names ("layers.3.weight") are the plain model's: sharded checkpoints and ``model.pt``
need no renaming.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from paratrain.errors import ConfigError


@dataclass(frozen=True)
class Block:
    """A linear layer and the layers after it, by their keys in the model's ``layers``."""

    keys: tuple[str, ...]
    in_features: int
    out_features: int


class StageModule(nn.Module):
    """The consecutive layers one pipeline stage runs, under their original keys.

    Its output is float32 whatever autocast produced: the tensors sent between stages then
    have one known dtype, declared to ``PipelineStage`` up front (no shape inference pass)."""

    def __init__(self, named_layers: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.layers = nn.Sequential()
        for key, layer in named_layers:
            self.layers.add_module(key, layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).float()


def model_blocks(model: nn.Module) -> list[Block]:
    """The model's blocks; ConfigError for a model that is not a Sequential of linear layers."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential):
        raise ConfigError(f"strategy 'pipeline' splits an MLP's layers, but the model is a "
                          f"{type(model).__name__} without a `layers` Sequential (formula models cannot be "
                          "split); use --model mlp, or a data-parallel strategy such as ddp")
    blocks: list[list[str]] = []
    widths: list[tuple[int, int]] = []
    for key, layer in layers.named_children():
        if isinstance(layer, nn.Linear):
            blocks.append([key])
            widths.append((layer.in_features, layer.out_features))
        elif not blocks:
            raise ConfigError(f"strategy 'pipeline' expects the MLP to begin with a linear layer, found "
                              f"{type(layer).__name__} at layers.{key}")
        else:
            blocks[-1].append(key)
    return [Block(tuple(keys), i, o) for keys, (i, o) in zip(blocks, widths)]


def check_stage_count(stages: int, blocks: Sequence[Block]) -> None:
    """ConfigError when there are more stages than linear layers to give them."""
    if stages > len(blocks):
        raise ConfigError(f"pipeline:{stages} needs at least {stages} linear layers (one per stage), but the MLP "
                          f"has {len(blocks)} (hidden layers + output layer); use pipeline:{len(blocks)} or fewer, "
                          "or more hidden layers")


def parameter_costs(model: nn.Module, blocks: Sequence[Block]) -> list[float]:
    """Each block's parameter count."""
    layers = model.layers
    return [float(sum(p.numel() for key in block.keys for p in layers.get_submodule(key).parameters()))
            for block in blocks]


def measured_costs(model: nn.Module, blocks: Sequence[Block], rows: int = 256, repeats: int = 5) -> list[float]:
    """Each block's forward+backward time on a random batch of ``rows`` rows (median of ``repeats``).

    Timed on copies of the blocks (batch norm's running statistics and the gradients of the
    model stay untouched) with the random stream forked (dropout), so training is unchanged."""
    layers = model.layers
    generator = torch.Generator().manual_seed(0)
    costs = []
    with torch.random.fork_rng(devices=[]):
        for block in blocks:
            part = copy.deepcopy(nn.Sequential(*(layers.get_submodule(key) for key in block.keys))).train()
            x = torch.randn(rows, block.in_features, generator=generator)
            times = []
            for _ in range(repeats + 1):  # the first run warms up kernels and is dropped
                begun = time.perf_counter()
                part(x).square().mean().backward()
                times.append(time.perf_counter() - begun)
            costs.append(sorted(times[1:])[len(times[1:]) // 2])
    return costs


def balanced_split(costs: Sequence[float], stages: int) -> list[int]:
    """Where each stage starts: consecutive groups of ``costs`` minimising the costliest group.

    Exact (dynamic programming over cut points); ties go to the earliest cuts, so every rank
    that computes it from the same costs gets the same answer.

    Example:
        >>> balanced_split([384, 4160, 4160, 65], 2)
        [0, 2]
    """
    n = len(costs)
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[s][i]: the least possible costliest group when the first i blocks form s stages.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i] - 1e-12:
                    best[s][i], cut[s][i] = value, j
    starts, i = [], n
    for s in range(stages, 0, -1):
        i = cut[s][i]
        starts.append(i)
    return starts[::-1]


def stage_module(model: nn.Module, blocks: Sequence[Block], starts: Sequence[int],
                 stage: int) -> tuple[StageModule, int, int]:
    """Stage ``stage``'s module with its input and output widths."""
    end = starts[stage + 1] if stage + 1 < len(starts) else len(blocks)
    mine = blocks[starts[stage]:end]
    layers = model.layers
    named = [(key, layers.get_submodule(key)) for block in mine for key in block.keys]
    return StageModule(named), mine[0].in_features, mine[-1].out_features
