"""Data-parallel fitting for very large tables: rows split across local processes.

Every worker holds a contiguous slice of the rows and runs the *same* search
(same starts, same decisions), SPMD-style, like DDP training: the solver only
asks the data for RSS values (one all-reduce of B numbers) and for R~ factors
(each worker's (k+1)^2 factor per start is all-gathered and re-factored: TSQR,
exactly the QR of the whole [J | r]). Since every rank sees identical reduced
values, every rank takes identical steps, and rank 0 reports the result.

Workers are started as ``python -m paratrain.curvefit.worker`` (never a fork of
this process); the parent hosts the TCPStore on a port the OS chooses, watches
the workers and, on the first failure, stops the rest and raises WorkerError
naming the rank.
"""

from __future__ import annotations

import datetime
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from paratrain.curvefit.engine import Solution
from paratrain.launch.store import loopback_store
from paratrain.launch.local import stop_workers, watch_workers, worker_env, write_private
from paratrain.launch.scratch import make_scratch

__all__ = ["fit_distributed", "DistributedEvaluator", "DistributedJob"]

TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DistributedJob:
    """What every worker gets (pickled to a private temp file)."""

    formula: str
    param_names: tuple[str, ...]
    variables: tuple[str, ...]
    target: str
    p0: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    settings: object
    n_rows: int
    threads: int
    starts: torch.Tensor | None = None


class DistributedEvaluator:
    """Wraps this rank's LocalEvaluator; every answer is reduced over all ranks."""

    def __init__(self, local):
        self.local = local
        self.model = local.model

    @property
    def k(self) -> int:
        return self.local.k

    def rss(self, P, index):
        total = self.local.rss(P, index).clone()
        dist.all_reduce(total)
        return torch.where(torch.isfinite(total), total, torch.full_like(total, torch.inf))

    def triangular(self, P, index):
        mine = self.local.triangular(P, index).contiguous()
        parts = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, mine)
        R = torch.linalg.qr(torch.cat(parts, dim=1), mode="r")[1]
        return R[:, : mine.shape[2], :]

    def totals(self):
        totals = self.local.totals().clone()
        dist.all_reduce(totals)
        return totals


def fit_distributed(problem, settings, workers: int) -> tuple[Solution, torch.Tensor]:
    """Run the fit on ``workers`` local processes; returns rank 0's solution and totals."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = problem.data.X.shape[1]
    if n < 2 * workers:
        from paratrain.errors import ConfigError

        raise ConfigError(f"workers={workers} needs at least {2 * workers} rows; the data has {n}")
    job = DistributedJob(problem.model.formula.text, problem.model.param_names, problem.model.variables,
                         problem.target, problem.p0, problem.lower, problem.upper, settings, n,
                         max(1, cores // workers), problem.starts)
    # The same rules as training's launcher: a store on loopback only, a private scratch folder
    # (the workers unpickle its job file), workers that end with this process.
    store = loopback_store(workers, TIMEOUT_S)
    scratch = make_scratch("curvefit")
    procs: list[subprocess.Popen] = []
    try:
        np.save(scratch / "X.npy", problem.data.X[0].numpy())
        np.save(scratch / "y.npy", problem.data.y[0].numpy())
        np.save(scratch / "w.npy", problem.data.w[0].numpy())
        write_private(scratch / "job.pkl", pickle.dumps(job))
        env = worker_env(job.threads)
        for rank in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "paratrain.curvefit.worker", "--scratch", str(scratch), "--rank", str(rank),
                 "--world-size", str(workers), "--port", str(store.port), "--parent-pid", str(os.getpid())],
                env=env))
        watch_workers(procs, scratch, label="curvefit worker")
        result = torch.load(scratch / "result.pt", weights_only=True)
    finally:
        stop_workers(procs)
        del store
        shutil.rmtree(scratch, ignore_errors=True)
    solution = Solution(result["params"], result["rss"], result["R"], result["n_iter"], result["status"],
                        int(result["starts_used"]))
    return solution, result["totals"]


def run_worker(scratch: Path, rank: int, world_size: int, port: int) -> None:
    """The body of one worker: join the group, fit on this rank's rows, rank 0 saves the result."""
    from paratrain.curvefit.evaluator import LocalEvaluator
    from paratrain.curvefit.fit import MIDDLE_ROWS, run_fit
    from paratrain.curvefit.problem import FitData, Model, Problem
    from paratrain.models.formula import parse_formula

    job: DistributedJob = pickle.loads((scratch / "job.pkl").read_bytes())  # our own private file
    torch.set_num_threads(job.threads)
    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)
    try:
        lo, hi = rank * job.n_rows // world_size, (rank + 1) * job.n_rows // world_size
        arrays = {name: np.load(scratch / f"{name}.npy", mmap_mode="r") for name in ("X", "y", "w")}
        shard = FitData(torch.tensor(np.array(arrays["X"][lo:hi]))[None], torch.tensor(np.array(arrays["y"][lo:hi]))[None],
                        torch.tensor(np.array(arrays["w"][lo:hi]))[None])
        model = Model(parse_formula(job.formula), job.param_names, job.variables)
        problem = Problem(model, shard, job.p0, job.lower, job.upper, job.target, True, job.starts)
        full = DistributedEvaluator(LocalEvaluator(model, shard))
        # Subsets are decided on the global row count, so every rank makes the same choice.
        explore = _subset(model, shard, job, job.settings.solve.explore_rows, world_size, rank)
        middle = (_subset(model, shard, job, MIDDLE_ROWS, world_size, rank)
                  if job.n_rows > 16 * MIDDLE_ROWS else None)
        settings = _with_threads(job.settings, job.threads)
        solution, totals = run_fit(problem, settings, full, explore, middle)
        if rank == 0:
            torch.save({"params": solution.params, "rss": solution.rss, "R": solution.R, "n_iter": solution.n_iter,
                        "status": solution.status, "starts_used": solution.starts_used, "totals": totals},
                       scratch / "result.tmp")
            os.replace(scratch / "result.tmp", scratch / "result.pt")
        # Leave together: a rank that tears down gloo while a peer is still inside a
        # collective makes the peer abort ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _subset(model, shard, job, rows: int, world_size: int, rank: int):
    """This rank's share of an evenly spread row subset, wrapped to reduce over ranks (None: all rows)."""
    from paratrain.curvefit.evaluator import LocalEvaluator
    from paratrain.curvefit.fit import explore_evaluator

    if job.n_rows <= rows:
        return None
    local = explore_evaluator(model, shard, job.settings, seed=job.settings.seed + rank,
                              rows=max(1, -(-rows // world_size)))
    return DistributedEvaluator(local or LocalEvaluator(model, shard))


def _with_threads(settings, threads: int):
    copy = pickle.loads(pickle.dumps(settings))
    object.__setattr__(copy, "threads", threads)
    return copy


