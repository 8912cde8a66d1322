"""Jobs for the emulated-network tests: top-level classes, so that the launcher can pickle them."""

from __future__ import annotations

import datetime
import os
import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


def _join(store, rank: int, world_size: int, timeout_s: float) -> None:
    """Join the job's gloo group through the launcher's store, every wait bounded."""
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


@dataclass(frozen=True)
class AllReduceJob:
    """Times gloo all_reduce of ``nbytes`` (fp32), ``repeat`` times after one warm-up; rank 0 reports."""

    nbytes: int = 4 * 1024 * 1024
    repeat: int = 3
    threads: int = 1
    timeout_s: float = 60.0

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict:
        _join(store, rank, world_size, self.timeout_s)
        try:
            tensor = torch.ones(self.nbytes // 4)
            dist.all_reduce(tensor)  # warm-up: connections, buffers
            seconds = []
            for _ in range(self.repeat):
                dist.barrier()
                started = time.perf_counter()
                dist.all_reduce(tensor)
                seconds.append(time.perf_counter() - started)
            correct = bool(torch.all(tensor == float(world_size) ** (self.repeat + 1)))
            return {"seconds": seconds, "median_s": statistics.median(seconds), "correct": correct,
                    "gloo_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
                    "host_address": os.environ.get("PARATRAIN_HOST_ADDR")}
        finally:
            dist.destroy_process_group()


@dataclass(frozen=True)
class FailingJob:
    """Rank ``rank_that_fails`` raises once the group is up; the others wait in a barrier."""

    rank_that_fails: int = 1
    threads: int = 1
    timeout_s: float = 30.0

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict:
        _join(store, rank, world_size, self.timeout_s)
        if rank == self.rank_that_fails:
            raise ValueError("this job fails on purpose")
        dist.barrier()
        return {}


@dataclass(frozen=True)
class SleepJob:
    """Joins the group, then sleeps: a run to interrupt."""

    seconds: float = 60.0
    threads: int = 1
    timeout_s: float = 90.0

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict:
        _join(store, rank, world_size, self.timeout_s)
        dist.barrier()
        if rank == 0:
            store.set("joined", "1")
        time.sleep(self.seconds)
        return {}
