"""One worker's compute per step for p workers: measured, or scaled from the nearest measurement.

On one machine p workers share its cores: a calibration measured them running
at once (contention included); for a p that was not measured, the nearest
measured count is scaled by how many workers share each core. Between machines
each worker has a machine of its own: one process's measurement, scaled to the
cores each machine has.
"""

from __future__ import annotations

from dataclasses import replace

from paratrain.costmodel.calibration import Calibration, ComputeProfile
from paratrain.costmodel.network import Network

_SCALED = ("step_s", "forward_backward_s", "optimizer_s", "per_sample_s", "ddp_overhead_s", "ddp_step_s",
           "ddp_nocomm_step_s",
           "topk_encode_s", "topk_decode_fixed_s", "topk_decode_per_rank_s", "powersgd_compute_s")
PARALLEL_EFFICIENCY = 0.8
"""Share of an extra core that an intra-op-threaded MLP step uses (an assumption where not
measured: matrix products scale well, the many small element-wise ops less)."""


def scaled(profile: ComputeProfile, factor: float, workers: int, threads: int) -> ComputeProfile:
    values = {name: (getattr(profile, name) * factor if getattr(profile, name) is not None else None)
              for name in _SCALED}
    steps = {name: seconds * factor for name, seconds in profile.strategy_step_s.items()}
    return replace(profile, workers=workers, threads=threads, strategy_step_s=steps, **values)


def compute_profile(calibration: Calibration, network: Network, workers: int) -> tuple[ComputeProfile, str]:
    """(profile, how it was obtained) for one of ``workers`` workers on ``network``."""
    if not network.shared_machine:
        return _own_machine(calibration, network.cores_per_worker or calibration.cores)
    measured = calibration.compute
    if workers in measured:
        return measured[workers], f"measured with {workers} concurrent workers"
    cores = calibration.cores
    below = [p for p in measured if p <= workers]
    reference = max(below) if below else min(measured)
    # Each worker gets cores/p of the machine (under one core when p > cores: time-sharing).
    factor = speed(cores / reference) / speed(cores / workers)
    threads = max(1, cores // workers)
    return scaled(measured[reference], factor, workers, threads), (
        f"scaled from {reference} measured worker{'s' if reference > 1 else ''} ({workers} share {cores} cores)")


def speed(cores: float) -> float:
    """Relative speed of one step on ``cores`` cores (a fraction: a time-shared core)."""
    return cores if cores <= 1 else 1 + PARALLEL_EFFICIENCY * (cores - 1)


def _own_machine(calibration: Calibration, cores: int) -> tuple[ComputeProfile, str]:
    """A worker alone on a machine with ``cores`` cores."""
    one = calibration.compute[1]
    here = calibration.cores
    if cores == here:
        return replace(one, workers=1), f"one process with {one.threads} threads, measured"
    # Fewer cores than here: a measurement with here/cores concurrent workers has that many cores each.
    concurrent = here // cores if cores < here else 0
    if concurrent in calibration.compute:
        profile = calibration.compute[concurrent]
        return replace(profile, workers=1), f"measured as {concurrent} workers x {cores} threads"
    factor = speed(here) / speed(cores)
    return scaled(one, factor, 1, cores), f"scaled from {here} cores to {cores} (assumed {PARALLEL_EFFICIENCY:.0%} per extra core)"
