"""Predicted memory of one worker: parameters, gradients, optimizer state, activations, buffers.

The parts mirror what a run measures (``train/memory.py``, summary.json["memory"]):
parameters, gradients and optimizer state are the model's bytes (from the calibration)
times the share a rank holds under a strategy; activations are the bytes the leaf layers
output for one batch, times the micro-batches alive at once. Two parts a run does not
count separately are added for the total: ``buffers_bytes`` (a strategy's own copies:
DDP's gradient buckets, FSDP's gathered layer) and ``runtime_bytes`` (the process itself:
Python, torch, gloo, about 384 MiB).

Per layer, a model is a list of ``LayerShape``: an MLP's linear layers from the
calibration's widths (what pipeline stages and tensor-parallel splits divide), any other
model one layer holding every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paratrain.costmodel.step import StepInputs

FLOAT_BYTES = 4
WORKER_BYTES = 384 * 2**20
"""A worker process's own peak memory (Python, torch, gloo, pandas, the training loop) where the
calibration did not measure more: the peak resident set of single and ddp workers training an
MLP 16-8-1 was 383-384 MiB with torch 2.13 on CPU (benchmarks/memory_prediction.py; an older
torch measured 259-262 MiB, launch/resources.py)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """One worker's predicted memory in bytes (the largest rank's, where ranks differ)."""

    parameters_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    """Activations alive at once during a step (the leaf layers' outputs)."""
    buffers_bytes: float = 0.0
    """The strategy's own copies: communication buckets, gathered parameters, error feedback."""
    runtime_bytes: float = 0.0
    """The process itself: Python, torch, the communication library."""
    note: str = ""
    """What the strategy holds, in words ('optimizer state / 4')."""

    @property
    def model_state_bytes(self) -> float:
        """Parameters + gradients + optimizer state (as summary.json's model_state_bytes)."""
        return self.parameters_bytes + self.gradients_bytes + self.optimizer_bytes

    @property
    def total_bytes(self) -> float:
        return self.model_state_bytes + self.activations_bytes + self.buffers_bytes + self.runtime_bytes

    def to_dict(self) -> dict:
        return {"parameters_bytes": self.parameters_bytes, "gradients_bytes": self.gradients_bytes,
                "optimizer_bytes": self.optimizer_bytes, "activations_bytes": self.activations_bytes,
                "buffers_bytes": self.buffers_bytes, "runtime_bytes": self.runtime_bytes,
                "model_state_bytes": self.model_state_bytes, "total_bytes": self.total_bytes, "note": self.note}

    def parts(self) -> str:
        """'4.0 MiB parameters + 4.0 MiB gradients + ... (optimizer state / 4)'."""
        from paratrain.costmodel.step import size

        parts = [(self.parameters_bytes, "parameters"), (self.gradients_bytes, "gradients"),
                 (self.optimizer_bytes, "optimizer state"), (self.activations_bytes, "activations"),
                 (self.buffers_bytes, "buffers"), (self.runtime_bytes, "process")]
        text = " + ".join(f"{size(nbytes)} {name}" for nbytes, name in parts if nbytes > 0)
        return f"{text} ({self.note})" if self.note else text

    def describe(self) -> str:
        """'270.3 MiB per worker: 4.0 MiB parameters + 4.0 MiB gradients + ...'."""
        from paratrain.costmodel.step import size

        return f"{size(self.total_bytes)} per worker: {self.parts()}"


@dataclass(frozen=True)
class LayerShape:
    """One layer as the memory model sees it (a linear layer of an MLP, or a whole other model)."""

    weight: int
    """Weight elements (rows x cols of a linear layer)."""
    bias: int
    """Other elements: the bias, and a norm layer's share."""
    rows: int
    """Output width."""
    cols: int
    """Input width."""
    activations_per_row: float
    """Bytes its outputs (and its norm/activation's) keep per batch row."""

    @property
    def parameters(self) -> int:
        return self.weight + self.bias


def full_model(inputs: "StepInputs") -> MemoryEstimate:
    """Every part of a whole model on one worker at the calibrated batch size (one micro-batch)."""
    memory = inputs.calibration.memory
    parameters = memory.get("parameters", FLOAT_BYTES * inputs.parameters)
    gradients = memory.get("gradients", parameters)
    default_state = 2.0 if inputs.calibration.optimizer in ("adam", "adamw") else 1.0
    optimizer = memory.get("optimizer_state", default_state * parameters)
    activations = memory.get("activations", 0.0)
    runtime = max(memory.get("process_rss", 0.0) - parameters - gradients - optimizer - activations, WORKER_BYTES)
    return MemoryEstimate(parameters, gradients, optimizer, activations, 0.0, runtime)


def replicated(inputs: "StepInputs", buffers: float = 0.0, note: str = "") -> MemoryEstimate:
    """A full copy of the model on every worker (ddp, localsgd, ...), plus the strategy's ``buffers``."""
    return replace(full_model(inputs), buffers_bytes=float(buffers), note=note)


def layers(inputs: "StepInputs") -> list[LayerShape]:
    """The model's layers: an MLP's linear layers from its widths; another model as one layer.

    Activations per row come from the calibration (split over an MLP's layers by their output
    widths: a hidden layer keeps its linear output and its activation, 2 x width; the head 1 x)."""
    fingerprint = inputs.calibration.fingerprint
    activations = full_model(inputs).activations_bytes / max(1, inputs.batch)
    widths = fingerprint.layers
    if fingerprint.model != "mlp" or len(widths) < 2:
        return [LayerShape(inputs.parameters, 0, 1, 1, activations)]
    pairs = list(zip(widths[:-1], widths[1:]))
    counted = sum(cols * rows + rows for cols, rows in pairs)
    # Parameters beyond the linear layers are norm layers' (2 per hidden unit): spread by width.
    extra = max(0, inputs.parameters - counted)
    hidden = sum(widths[1:-1]) or 1
    weights = [2.0 * rows for _, rows in pairs[:-1]] + [float(pairs[-1][1])]
    total = sum(weights)
    shapes = []
    for index, (cols, rows) in enumerate(pairs):
        norm = round(extra * rows / hidden) if index < len(pairs) - 1 else 0
        shapes.append(LayerShape(cols * rows, rows + norm, rows, cols, activations * weights[index] / total))
    return shapes


def scaled(estimate: MemoryEstimate, state_share: float, activations: float, buffers: float,
           note: str) -> MemoryEstimate:
    """``estimate`` with parameters, gradients and optimizer state times ``state_share``."""
    return replace(estimate, parameters_bytes=estimate.parameters_bytes * state_share,
                   gradients_bytes=estimate.gradients_bytes * state_share,
                   optimizer_bytes=estimate.optimizer_bytes * state_share,
                   activations_bytes=float(activations), buffers_bytes=float(buffers), note=note)


def parse_size(text: object, field: str = "memory-per-worker") -> float:
    """'2GiB', '500MB', '1.5 GiB', '64G' (binary, as Slurm's --mem), '1048576' -> bytes.

    Example:
        >>> parse_size("2GiB")
        2147483648.0
        >>> parse_size("500MB")
        500000000.0
    """
    import math
    import re

    from paratrain.errors import ConfigError

    units = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "kib": 2**10, "mib": 2**20,
             "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if match is None or match.group(2) not in units:
        raise ConfigError(f"{field}={text!r} is not a size; give a number and a unit such as 2GiB, 500MB, "
                          "1.5GiB or 64G (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB of 1000)")
    value = float(match.group(1)) * units[match.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{field}={text!r} must be a size > 0, e.g. 2GiB")
    return value
