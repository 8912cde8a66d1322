"""Where a rank's memory goes: parameters, gradients, optimizer state, activations, the peak.

Parameters, gradients and optimizer state are counted from the tensors this rank holds
(a DTensor's local shard, a pipeline stage's layers, ZeRO's own partition), so a sharding
strategy's saving shows up as it is. Activations are estimated: the bytes the model's leaf
layers output during one training step (recorded by forward hooks on the run's first step),
times the share of the step's micro-batches whose activations are alive at once
(``Strategy.activations_alive``). The peak is measured (``metrics.peak_memory_bytes``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

import torch

PEAK, PARAMETERS, GRADIENTS, OPTIMIZER, ACTIVATIONS = range(5)


@dataclass(frozen=True)
class MemoryBreakdown:
    """One rank's memory in bytes."""

    peak_bytes: int = 0
    """The process's measured high-water mark: CUDA allocator peak on a GPU, resident set on a CPU."""
    parameters_bytes: int = 0
    """Parameters this rank holds."""
    gradients_bytes: int = 0
    """Gradients this rank holds after a step."""
    optimizer_bytes: int = 0
    """Optimizer state this rank holds (Adam: two moments per parameter it updates)."""
    activations_bytes: int = 0
    """Activations alive at once during a step, estimated."""

    @property
    def model_state_bytes(self) -> int:
        """Parameters + gradients + optimizer state."""
        return self.parameters_bytes + self.gradients_bytes + self.optimizer_bytes

    def to_list(self) -> list[float]:
        return [float(getattr(self, f.name)) for f in fields(self)]

    @classmethod
    def from_list(cls, values: Iterable[float]) -> "MemoryBreakdown":
        return cls(*(int(v) for v in values))

    def to_dict(self) -> dict[str, int]:
        out = asdict(self)
        out["model_state_bytes"] = self.model_state_bytes
        return out


WIDTH = len(fields(MemoryBreakdown))
"""Numbers per rank in the all-reduced vector."""


def local_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the tensors' parts on this rank (a DTensor's shard; anything not a tensor counts 0)."""
    total = 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        to_local = getattr(tensor, "to_local", None)
        local = to_local() if to_local is not None else tensor
        total += local.numel() * local.element_size()
    return total


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The state tensors of an optimizer (of ZeRO's local optimizer: its own partition only)."""
    inner = getattr(optimizer, "optim", optimizer)  # ZeroRedundancyOptimizer keeps its shard's optimizer here
    return [value for state in inner.state.values() for value in state.values() if isinstance(value, torch.Tensor)]


def count_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer, peak_bytes: int,
                 activations_bytes: int) -> MemoryBreakdown:
    """This rank's breakdown now (call after a step, when gradients and optimizer state exist)."""
    params = list(model.parameters())
    return MemoryBreakdown(
        peak_bytes=int(peak_bytes),
        parameters_bytes=local_bytes(params),
        gradients_bytes=local_bytes(p.grad for p in params if p.grad is not None),
        optimizer_bytes=local_bytes(optimizer_tensors(optimizer)),
        activations_bytes=int(activations_bytes),
    )


class ActivationMeter:
    """Bytes that the leaf layers of ``model`` output while hooked (one training step)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.bytes = 0
        self._handles = [module.register_forward_hook(self._hook) for module in model.modules()
                         if not list(module.children())]

    def _hook(self, module, inputs, output) -> None:
        if isinstance(output, torch.Tensor) and torch.is_grad_enabled():
            self.bytes += local_bytes([output])

    def close(self) -> int:
        """Stop recording; the bytes seen."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self.bytes


def gather_breakdowns(vector: torch.Tensor, world_size: int, offset: int) -> list[MemoryBreakdown]:
    """Each rank's breakdown from the all-reduced vector (rank r's WIDTH numbers at offset + r*WIDTH)."""
    values = vector[offset: offset + world_size * WIDTH].tolist()
    return [MemoryBreakdown.from_list(values[r * WIDTH:(r + 1) * WIDTH]) for r in range(world_size)]
