"""Whether this machine can hold the worker processes a run asks for: cores and memory.

Checked before a run directory is made: 64 workers on 2 cores once started 64 processes
(16.7 GB) with no word.
"""

from __future__ import annotations

import os
from pathlib import Path

from paratrain.errors import ConfigError


WORKER_BYTES = 260 * 2**20
"""Private memory of one ddp worker process (Python, torch, gloo, an MLP 256-256), measured:
Private_Dirty in /proc/PID/smaps_rollup was 259-262 MiB for each of 2 and of 4 workers."""
SHARED_BYTES = 140 * 2**20
"""Memory the workers share (torch's libraries, mapped once): Shared_Clean was 133-137 MiB."""
WORKER_BYTES_PER_DATA_BYTE = 3
"""Each worker loads the whole table and keeps its encoding and tensors: a few times the
table's size (an estimate; the measured tables were too small to show in the figures above)."""
OVERSUBSCRIBED = "measured on 2 cores: 4 workers trained 1.9x slower than 2, 8 workers 2.0x slower"
"""The demo job (ddp, MLP 256-256, 16k training rows, 5 epochs), 3 interleaved repeats,
median ratio of samples/s; the whole command took 1.9x (4) and 2.5x (8) as long as with 2."""


def check_worker_resources(workers: int, cores: int, available_bytes: int | None, data_bytes: int = 0) -> str | None:
    """Refuse ``workers`` processes that need more memory than ``available_bytes``; return a
    warning text when they outnumber ``cores`` (None when all is well).

    Example:
        >>> check_worker_resources(2, cores=2, available_bytes=8 * 2**30) is None
        True
    """
    per_worker = WORKER_BYTES + WORKER_BYTES_PER_DATA_BYTE * data_bytes
    needed = SHARED_BYTES + workers * per_worker
    if available_bytes is not None and needed > available_bytes:
        fits = max(1, (available_bytes - SHARED_BYTES) // per_worker)
        raise ConfigError(
            f"workers={workers} would need about {needed / 2**30:.1f} GiB of memory "
            f"({per_worker / 2**20:.0f} MiB per worker process) but {available_bytes / 2**30:.1f} GiB is available; "
            f"use --workers {min(fits, cores)} or fewer"
        )
    if workers > cores:
        return (f"workers={workers} exceeds the {cores} cores of this machine: the workers take turns on the "
                f"cores and wait for each other ({OVERSUBSCRIBED}); --workers {cores} is likely faster")
    return None


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux): what can be used without swapping; None elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cpus() -> tuple[int, ...]:
    """The ids of the cores this process may run on (a container or taskset may allow fewer than exist).

    Example:
        >>> len(usable_cpus()) == usable_cores()
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """How many cores this process may run on: the one count every thread and worker default uses."""
    return len(usable_cpus())
