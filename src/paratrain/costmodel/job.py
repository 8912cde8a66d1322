"""The calibration's worker job: timed collectives and concurrent compute on p real gloo ranks.

Run by ``launch.local.launch_local`` like training's workers (same launcher,
threads and environment), so that what it times is what training meets.
Rank 0 decides, from the deadline, whether the next message size still fits,
and tells the others (every rank must enter the same collectives).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from paratrain.costmodel.fitting import COLLECTIVES
from paratrain.costmodel.probes import Workload, measure_compute, measure_powersgd, measure_topk, rss_bytes, typical

_GATHER_LIMIT = 16 * 2**20
"""All-gather messages stop at 16 MiB per rank: p copies of 64 MiB would be the memory of a model
many times this one, and the fit needs only the slope."""


@dataclass(frozen=True)
class CalibrationJob:
    """Time collectives over ``sizes`` (bytes) and, when ``workload`` is given, one worker's step
    while every rank steps at once; stop starting new work at ``deadline`` (Unix time)."""

    threads: int
    deadline: float
    sizes: tuple[int, ...] = ()
    repeats: int = 3
    workload: Workload | None = None
    compute_repeats: int = 8
    end: float | None = None
    """Unix time by which the compute part must be done (repeats are cut to fit)."""
    strategy_steps: int = 0
    """Steps to time of every contender's real strategy (0: none); see strategy_steps.py."""
    measure_s: float | None = None
    """When set, the collectives may take this long from the moment the group is up (``deadline`` is
    then ignored): a budget that does not shrink with a slow start of the processes."""

    @property
    def timeout_s(self) -> float:
        return max(30.0, self.deadline - time.time() + 60.0)

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict | None:
        from paratrain.launch.env import destroy_process_group, init_process_group
        from paratrain.strategies import WorkerContext

        torch.set_num_threads(self.threads)
        from paratrain.costmodel import probes
        from paratrain.launch.resources import usable_cores

        probes.OVERSUBSCRIBED = world_size > usable_cores()
        ctx = WorkerContext(rank=rank, world_size=world_size, local_rank=local_rank)
        init_process_group(ctx, self.timeout_s, store)
        try:
            result: dict = {"workers": world_size, "threads": self.threads}
            deadline = self.deadline if self.measure_s is None else time.time() + self.measure_s
            result["collectives"] = self._collectives(rank, world_size, deadline)
            if self.workload is not None:
                result["compute"] = self._compute(rank, world_size)
            return result if rank == 0 else None
        finally:
            destroy_process_group()

    def _agree(self, rank: int, go: bool) -> bool:
        """Rank 0's decision, on every rank."""
        flag = torch.tensor([1 if (go or rank != 0) else 0])
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def _collectives(self, rank: int, world_size: int, deadline: float) -> dict[str, list[list[float]]]:
        points: dict[str, list[list[float]]] = {name: [] for name in COLLECTIVES}
        last_seconds = 0.0
        for nbytes in self.sizes:
            # Sizes grow 4x; so does (about) the time. Stop when the next size would not fit.
            expected = last_seconds * 4 * (self.repeats + 1) * len(COLLECTIVES) * 2
            # Rank 0's clock decides for all (every rank must enter the same collectives).
            if not self._agree(rank, time.time() + expected < deadline):
                break
            numel = max(1, nbytes // 4)
            tensor = torch.ones(numel)
            times = {"all_reduce": self._time(lambda: dist.all_reduce(tensor)),
                     "broadcast": self._time(lambda: dist.broadcast(tensor, src=0))}
            if nbytes <= _GATHER_LIMIT:
                out = [torch.empty(numel) for _ in range(world_size)]
                times["all_gather"] = self._time(lambda: dist.all_gather(out, tensor))
            times["p2p"] = self._time(lambda: self._ping_pong(rank, tensor)) / 2
            last_seconds = max(times.values())
            for name, seconds in times.items():
                points[name].append([world_size, numel * 4, seconds])
        return points

    def _time(self, fn) -> float:
        fn()  # warm-up: connections and buffers
        times = []
        for _ in range(self.repeats):
            dist.barrier()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return typical(times)

    @staticmethod
    def _ping_pong(rank: int, tensor: torch.Tensor) -> None:
        """Rank 0 to rank 1 and back (the others wait at the next barrier)."""
        if rank == 0:
            dist.send(tensor, dst=1)
            dist.recv(tensor, src=1)
        elif rank == 1:
            dist.recv(tensor, src=0)
            dist.send(tensor, dst=0)

    def _compute(self, rank: int, world_size: int) -> dict[str, float]:
        """Every rank measures at once (contending as in training); rank 0 gets the means."""
        workload = self.workload
        dist.barrier()
        repeats = self._repeats(rank, workload)
        figures = measure_compute(workload, repeats)
        if world_size > 1:
            dist.barrier()
            figures["ddp_step_s"] = self._ddp_step(workload, repeats)
            dist.barrier()
            figures["ddp_nocomm_step_s"] = self._ddp_step(workload, repeats, communicate=False)
        dist.barrier()
        figures["topk_encode_s"], figures["topk_decode_fixed_s"], figures["topk_decode_per_rank_s"] = \
            measure_topk(workload, max(2, repeats // 2))
        dist.barrier()
        figures["powersgd_compute_s"] = measure_powersgd(workload, max(2, repeats // 2))
        figures["process_rss"] = rss_bytes()
        everyone: list[dict] = [{} for _ in range(world_size)]
        dist.all_gather_object(everyone, figures)
        result = {key: statistics.fmean(r[key] for r in everyone) for key in figures}
        if self.strategy_steps:
            from paratrain.costmodel.strategy_steps import time_contenders

            result["strategy_step_s"] = time_contenders(workload, rank, world_size, self.strategy_steps, self.end)
        return result

    def _repeats(self, rank: int, workload: Workload) -> int:
        """Timed steps per measurement that fit before ``end``: every rank times one step, rank 0 decides
        (about 5 steps' worth of work per repeat: compute at two batch sizes, DDP, top-k, PowerSGD)."""
        from paratrain.costmodel.probes import time_steps

        model, optimizer = workload.build()
        start = time.perf_counter()
        time_steps(workload, model, optimizer, workload.batch_size, 1)
        one = time.perf_counter() - start
        left = (self.end - time.time()) if self.end is not None else one * 5 * self.compute_repeats
        # A third of the time for these; the rest for every contender's real steps (~13 steps each).
        budget = left / 3 if self.strategy_steps else left
        chosen = torch.tensor([max(2, min(self.compute_repeats, int(budget / (5 * max(one, 1e-4)))))])
        dist.broadcast(chosen, src=0)
        return int(chosen.item())

    def _ddp_step(self, workload: Workload, repeats: int, communicate: bool = True) -> float:
        """Median seconds of a plain DDP step (forward, backward with the all-reduce, optimizer);
        without ``communicate`` its hook hands each bucket back at once (the wrapper's cost alone)."""
        from torch.nn.parallel import DistributedDataParallel

        from paratrain.train.optim import build_optimizer

        model, _ = workload.build()
        wrapped = DistributedDataParallel(model)
        if not communicate:
            wrapped.register_comm_hook(None, _no_communication)
        optimizer = build_optimizer(model.parameters(), workload.optim)
        x, y = workload.batch(workload.batch_size)
        times = []
        for i in range(repeats + 3):  # DDP rebuilds its buckets after the first steps
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            workload.loss(wrapped(x), y).backward()
            optimizer.step()
            if i >= 3:
                times.append(time.perf_counter() - start)
        return typical(times)


def _no_communication(state, bucket):
    """A DDP hook that sends nothing: the bucket, as it is, at once."""
    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future
