"""Fit P parallel trials of W data-parallel workers each onto this machine.

Oversubscribed cores thrash (2 OpenMP threads in each of 2 processes on 2 cores
ran 7x slower here), so the plan never gives out more threads than cores: it
lowers P when P x W exceeds the cores (or GPUs), gives each trial process its
own block of cores (``os.sched_setaffinity``, inherited by the W workers that
``fit`` starts) or its own GPUs (``CUDA_VISIBLE_DEVICES``), and sets threads per
process to cores-per-trial / W.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from paratrain.errors import ConfigError
from paratrain.launch.resources import usable_cpus


@dataclass(frozen=True)
class Slot:
    """One trial process: the cores it is pinned to and the GPUs it sees."""

    index: int
    cpus: tuple[int, ...]
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class ResourcePlan:
    """P slots of W workers, threads per worker process."""

    parallel: int
    workers_per_trial: int
    threads: int
    slots: tuple[Slot, ...]
    notes: tuple[str, ...] = field(default=())
    cores: int = 1
    gpus: int = 0

    def describe(self) -> str:
        """The plan as printed at the start of a search."""
        devices = f"{self.cores} cores" + (f", {self.gpus} GPUs" if self.gpus else "")
        lines = [f"plan: {self.parallel} trial(s) at once x {self.workers_per_trial} worker(s) each, "
                 f"{self.threads} thread(s) per worker, on {devices}"]
        for slot in self.slots:
            where = f"cores {_ranges(slot.cpus)}" + (f", GPU {','.join(slot.gpus)}" if slot.gpus else "")
            lines.append(f"  trial slot {slot.index}: {where}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def environment(self, slot: Slot) -> dict[str, str]:
        """Variables for the slot's process: threads fixed before any OpenMP runtime starts."""
        env = {name: str(self.threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
        return env


def visible_gpus() -> tuple[str, ...]:
    """GPU ids as CUDA_VISIBLE_DEVICES would name them; () without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver means no GPU for us, not a failed search
        count = 0
    inherited = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return tuple(inherited[:count]) if inherited else tuple(str(i) for i in range(count))


def plan_resources(parallel: int, workers_per_trial: int = 1, cpus: tuple[int, ...] | None = None,
                   gpus: tuple[str, ...] = (), trials: int | None = None) -> ResourcePlan:
    """Fit ``parallel`` trials of ``workers_per_trial`` workers onto ``cpus`` and ``gpus``;
    no more slots than ``trials``, the trials the search has to run (None: no limit).

    Example:
        >>> plan = plan_resources(4, 1, cpus=(0, 1))
        >>> plan.parallel, plan.threads, [slot.cpus for slot in plan.slots]
        (2, 1, [(0,), (1,)])
    """
    for name, value in (("parallel", parallel), ("workers_per_trial", workers_per_trial)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} must be an integer >= 1")
    cpus = tuple(cpus) if cpus is not None else usable_cpus()
    notes = []
    if trials is not None and parallel > trials >= 1:
        # More slots than trials would leave cores idle: fewer slots get more cores each.
        notes.append(f"--parallel {parallel} is more than the {trials} trial(s) to run: "
                     f"{trials} at once, with the cores shared among them")
        parallel = trials
    wanted = parallel
    if gpus:
        if workers_per_trial > len(gpus):
            raise ConfigError(f"workers_per_trial={workers_per_trial} needs a GPU per worker, but {len(gpus)} "
                              f"GPU(s) are visible; use --workers-per-trial {len(gpus)} or --device cpu")
        parallel = min(parallel, len(gpus) // workers_per_trial)
    if parallel * workers_per_trial > len(cpus):
        parallel = max(1, len(cpus) // workers_per_trial)
    if parallel < wanted:
        budget = f"{len(gpus)} GPUs" if gpus else f"{len(cpus)} cores"
        notes.append(f"--parallel {wanted} x --workers-per-trial {workers_per_trial} does not fit {budget}: "
                     f"running {parallel} trial(s) at once")
    if workers_per_trial > len(cpus):
        notes.append(f"{workers_per_trial} workers share {len(cpus)} cores: they will run slower than fewer would")
    per_slot = max(1, len(cpus) // parallel)
    threads = max(1, per_slot // workers_per_trial)
    slots = []
    for index in range(parallel):
        block = cpus[index * per_slot:(index + 1) * per_slot] or cpus
        gpu_block = gpus[index * workers_per_trial:(index + 1) * workers_per_trial] if gpus else ()
        slots.append(Slot(index, tuple(block), tuple(gpu_block)))
    return ResourcePlan(parallel, workers_per_trial, threads, tuple(slots), tuple(notes), len(cpus), len(gpus))


def pin_to(cpus: tuple[int, ...]) -> None:
    """Pin this process (and the processes it starts) to ``cpus``; a no-op where unsupported."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus))


def _ranges(values: tuple[int, ...]) -> str:
    """(0, 1, 2, 5) -> '0-2,5'."""
    parts, start, prev = [], None, None
    for value in values:
        if start is None:
            start = prev = value
        elif value == prev + 1:
            prev = value
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = value
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ",".join(parts)
