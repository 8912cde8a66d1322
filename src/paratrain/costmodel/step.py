"""What every strategy's model receives and returns: the inputs of one prediction, and the Prediction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from paratrain.costmodel.calibration import Calibration, ComputeProfile
from paratrain.costmodel.memory import FLOAT_BYTES, WORKER_BYTES, MemoryEstimate, replicated
from paratrain.costmodel.network import Network, comm_time
from paratrain.launch.links import LOOPBACK

__all__ = ["FLOAT_BYTES", "WORKER_BYTES", "MemoryEstimate", "Prediction", "StepInputs", "bound", "ms", "size"]


@dataclass(frozen=True)
class Prediction:
    """One contender's predicted step on p workers; times in seconds, sizes in bytes per rank."""

    contender: str
    workers: int
    link: str
    step_s: float
    """Wall time of one optimizer step of one worker (each worker's own step for async/hogwild)."""
    samples_per_s: float
    """All workers together."""
    memory_bytes: float
    """Peak memory of the largest rank (the parameter server's rank for async)."""
    comm_bytes: float
    """Bytes one rank sends per step (on average over local SGD's period)."""
    compute_s: float
    comm_s: float
    """Communication that is not hidden behind compute, per step."""
    reason: str
    """What bounds the step, in one line."""
    extra_s: float = 0.0
    """Everything else: compression arithmetic, the DDP wrapper's own cost."""
    memory: MemoryEstimate | None = None
    """``memory_bytes`` in parts: parameters, gradients, optimizer state, activations, buffers, process."""

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["memory"] = self.memory.to_dict() if self.memory is not None else None
        return out


@dataclass(frozen=True)
class StepInputs:
    """One contender's question: this calibration, this many workers, this network, this option."""

    calibration: Calibration
    network: Network
    workers: int
    profile: ComputeProfile
    profile_note: str
    option: str | None
    """The strategy's argument ('8' for localsgd:8) or the compression ('topk:0.01')."""
    contender: str
    options: Mapping[str, Any] = field(default_factory=dict)
    """The strategy's own settings (its ``Options`` with the run's values: microbatches, ...)."""

    @property
    def batch(self) -> int:
        return self.calibration.batch_size

    @property
    def parameters(self) -> int:
        return self.calibration.parameters

    @property
    def dense_bytes(self) -> float:
        return float(FLOAT_BYTES * self.parameters)

    def comm(self, collective: str, nbytes: float, workers: int | None = None) -> float:
        """Seconds of one collective during training: on a shared machine, gloo's own work (loopback's
        time) is inflated by the calibration's measured contention with compute; the wire's is not."""
        p = self.workers if workers is None else workers
        seconds = comm_time(self.calibration, self.network, collective, p, nbytes)
        inflation = self.profile.comm_inflation
        if not self.network.shared_machine or not inflation or inflation <= 1.0:
            return seconds
        loopback = comm_time(self.calibration, Network(LOOPBACK), collective, p, nbytes)
        return seconds + (inflation - 1.0) * min(loopback, seconds)

    def setting(self, name: str, default: Any) -> Any:
        """The strategy's setting ``name`` (``default`` where the strategy does not declare it)."""
        value = self.options.get(name)
        return default if value is None else value

    def prediction(self, compute_s: float, comm_s: float, extra_s: float, comm_bytes: float,
                   memory: MemoryEstimate, reason: str, samples_per_step: float | None = None) -> Prediction:
        step = compute_s + comm_s + extra_s
        samples = self.batch * self.workers if samples_per_step is None else samples_per_step
        return Prediction(self.contender, self.workers, self.network.name, step,
                          samples / step if step > 0 else math.inf, memory.total_bytes, comm_bytes, compute_s,
                          comm_s, reason, extra_s, memory)

    def replicated(self, buffers: float = 0.0, note: str = "") -> MemoryEstimate:
        """A full copy of the model per worker plus ``buffers`` (costmodel/memory.py)."""
        return replicated(self, buffers, note)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.0f} us"


def size(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes:.0f} B"


def bound(compute_s: float, comm_s: float, comm_bytes: float, inputs: StepInputs) -> str:
    """'communication-bound: 4.0 MiB per step on 10 Gbit/s is 3.4 ms against 2.1 ms of compute'."""
    where = inputs.network.describe()
    kind = "communication-bound" if comm_s > compute_s else "compute-bound"
    return f"{kind}: {size(comm_bytes)} per step on {where} is {ms(comm_s)} against {ms(compute_s)} of compute"
