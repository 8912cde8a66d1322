"""`precision='auto'`: bf16 where it measurably pays on this machine, fp32 everywhere else.

bf16 autocast is 1.4-4x faster than fp32 on CPUs with native bf16 (AVX512-BF16, AMX) for
mid-sized MLPs, 20-40x slower on CPUs without it, and slower than fp32 for tiny steps
(casting costs more than it saves). So the choice is measured: rank 0 times a few
training steps of the run's own model at the run's batch size in both precisions
(train/precisionprobe.py), keeps bf16 only if it is at least MIN_SPEEDUP faster and its
loss after those steps is within MAX_LOSS_GAP of fp32's, and tells every other rank
(no rank may train in another precision). Probes are cached (train/probecache.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from paratrain.config import FitConfig
from paratrain.train import probecache
from paratrain.train.precision import cpu_has_native_bf16
from paratrain.train.precisionprobe import LossFn, ProbeMeasurement, probe_precisions

log = logging.getLogger("paratrain")

MIN_SPEEDUP = 1.15
"""bf16 must be at least this much faster: below it, timing noise could be the whole gain."""
MAX_LOSS_GAP = 0.01
"""bf16's loss after the probe's steps must be within this fraction of fp32's."""
MIN_STEP_WORK = 4_000_000
"""Parameters x batch rows below which bf16 is not probed. Measured on an AVX-512 BF16 CPU
(1 thread, Adam): MLPs of 1.4k-18k parameters at batch 32-256 (up to 4.6M) had bf16 steps 0.6-1.0x
as fast as fp32, and steps under a millisecond; 5M and up reached 1.2x and more."""


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run trains in, why, and the measurement behind it (None if none)."""

    name: str
    reason: str
    probe: dict[str, Any] | None = None

    def summary_fields(self) -> dict[str, Any]:
        return {"precision": self.name, "precision_reason": self.reason, "precision_probe": self.probe}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason, "probe": self.probe}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PrecisionChoice":
        return cls(str(values["name"]), str(values["reason"]), values.get("probe"))


def decide(measurement: ProbeMeasurement) -> tuple[str, str]:
    """bf16 if the probe found it at least MIN_SPEEDUP faster with a loss within MAX_LOSS_GAP.

    Example:
        >>> m = ProbeMeasurement(2e-3, 1e-3, 1.0, 1.001, steps=7, timed_steps=5, batch_size=256,
        ...                      threads=2, seconds=0.1)
        >>> decide(m)[0]
        'bf16'
    """
    timing = (f"median step fp32 {measurement.fp32_step_s * 1e3:.3g} ms, bf16 {measurement.bf16_step_s * 1e3:.3g} ms "
              f"of {measurement.timed_steps}")
    # Both the median of side-by-side ratios and the fastest steps must show the gain: on a
    # busy machine one of them alone can be moved by other processes.
    speedup = min(measurement.speedup, measurement.best_speedup)
    if speedup < MIN_SPEEDUP:
        return "fp32", (f"bf16 not measurably faster: {speedup:.2f}x < {MIN_SPEEDUP}x "
                        f"({timing}, batch {measurement.batch_size}, {measurement.threads} threads)")
    if not measurement.loss_gap <= MAX_LOSS_GAP:  # NaN fails too
        return "fp32", (f"bf16 {speedup:.2f}x faster but its loss after {measurement.steps} steps "
                        f"differs from fp32's by {measurement.loss_gap:.2%} (> {MAX_LOSS_GAP:.0%})")
    return "bf16", (f"bf16 {speedup:.2f}x faster ({timing}, batch {measurement.batch_size}, "
                    f"{measurement.threads} threads); loss after {measurement.steps} steps within "
                    f"{measurement.loss_gap:.2%} of fp32's")


def skip_reason(config: FitConfig, model: torch.nn.Module, device: torch.device) -> str | None:
    """Why fp32 is chosen without probing, or None when a probe should decide."""
    if config.model.model == "formula":
        return "formula model: few parameters, fitted to full precision; bf16 would cost accuracy and gain no speed"
    if device.type == "cpu" and not cpu_has_native_bf16():
        return "no native bf16: bf16 is 20-40x slower here (the CPU lacks avx512_bf16/amx_bf16)"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this CUDA device has no bf16 support"
    if device.type not in ("cpu", "cuda"):
        return f"no bf16 probe for device type {device.type!r}"
    params = sum(p.numel() for p in model.parameters())
    work = params * config.train.batch_size
    if work < MIN_STEP_WORK:
        return (f"tiny training step ({params:,} parameters x batch {config.train.batch_size} = {work / 1e6:.2g}M "
                f"< {MIN_STEP_WORK / 1e6:.0f}M): bf16 is not faster there and timing it would be noise")
    return None


def choose_precision(config: FitConfig, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                     make_optimizer: Callable[[Any], torch.optim.Optimizer]) -> PrecisionChoice:
    """Decide on this process alone: a stated reason, a cached probe, or a new probe (then cached).

    ``x, y`` are training rows on the model's device; the probe trains copies on the first of them.
    """
    if config.train.precision != "auto":
        return PrecisionChoice(config.train.precision, f"set in the config (precision={config.train.precision})")
    device = next(model.parameters(), torch.zeros(())).device
    reason = skip_reason(config, model, device)
    if reason is not None:
        return PrecisionChoice("fp32", reason)
    key = probecache.probe_key(model, device, config.train.batch_size, torch.get_num_threads(), config.optim.optimizer)
    cached = probecache.load(key)
    if cached is not None:
        measurement = ProbeMeasurement.from_dict(cached)
        name, reason = decide(measurement)
        return PrecisionChoice(name, f"{reason} (cached probe)", {**measurement.to_dict(), "cached": True})
    try:
        measurement = probe_precisions(model, make_optimizer, loss_fn, x, y, config.train.batch_size)
    except Exception as exc:  # a probe that fails must not fail the run: fp32 always works
        log.debug("precision probe failed", exc_info=True)
        return PrecisionChoice("fp32", f"bf16 probe failed ({type(exc).__name__}: {exc}); fp32 is the safe choice")
    name, reason = decide(measurement)
    # A probe that other load disturbed decides this run only: the next run measures again.
    stored = probecache.store(key, measurement.to_dict()) if measurement.steady else None
    if not measurement.steady:
        reason += " (timings unsteady, the machine is busy: not cached)"
    return PrecisionChoice(name, reason, {**measurement.to_dict(), "cached": False,
                                          "cache_file": str(stored) if stored else None})


def resumed_precision(config: FitConfig, checkpoint_state: dict[str, Any]) -> PrecisionChoice | None:
    """A resumed auto run keeps the precision it chose (its optimizer state was made in it)."""
    if config.train.precision != "auto" or not checkpoint_state.get("precision"):
        return None
    earlier = PrecisionChoice.from_dict(checkpoint_state["precision"])
    suffix = "; kept on resume"
    reason = earlier.reason if earlier.reason.endswith(suffix) else earlier.reason + suffix  # resumed again
    return PrecisionChoice(earlier.name, reason, earlier.probe)


def share_from_rank0(choice: PrecisionChoice | None, world_size: int) -> PrecisionChoice:
    """Every rank gets rank 0's choice (others pass None); a no-op on one process.

    The other ranks wait here while rank 0 probes: their cores stay free for its timing.
    """
    if world_size <= 1 and choice is not None:
        return choice
    import torch.distributed as dist

    box = [choice.to_dict() if choice is not None else None]
    dist.broadcast_object_list(box, src=0)
    return PrecisionChoice.from_dict(box[0])

