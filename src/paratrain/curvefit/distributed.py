"""Data-parallel fitting for very large tables: rows split across processes.

Every rank holds a contiguous slice of the rows and runs the *same* search
(same starts, same decisions), SPMD-style, like DDP training: the solver only
asks the data for RSS values (one all-reduce of B numbers) and for R~ factors
(each rank's (k+1)^2 factor per start is all-gathered and re-factored: TSQR,
exactly the QR of the whole [J | r]). Since every rank sees identical reduced
values, every rank takes identical steps and ends with the same solution.

Two ways to have the ranks, one body (:func:`fit_rank`):

- :func:`fit_distributed` starts local workers with training's launcher
  (:func:`paratrain.launch.local.launch_local`: a store on loopback, a private
  scratch folder, errors named by rank, workers that end with this process);
  the rows go to the workers as memory-mapped files in that folder.
- :func:`fit_under_torchrun` is one rank of a job that torchrun (or
  ``paratrain launch``) started: every rank has read the whole table and keeps
  its own slice, and the group is joined through torchrun's env:// variables.
"""

from __future__ import annotations

import base64
import datetime
import io
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from paratrain.curvefit.engine import Solution
from paratrain.curvefit.problem import FitData, Model, Problem
from paratrain.errors import ConfigError

__all__ = ["fit_distributed", "fit_under_torchrun", "fit_rank", "DistributedEvaluator", "CurveFitJob", "FitSpec"]

TIMEOUT_S = 300.0
"""Seconds the rendezvous and every collective may wait: a rank that is gone fails the fit, not hangs it."""

_ARRAYS = ("X", "y", "w")


class DistributedEvaluator:
    """Wraps this rank's LocalEvaluator; every answer is reduced over all ranks of ``group``
    (None: the default group)."""

    def __init__(self, local, group=None):
        self.local = local
        self.model = local.model
        self.group = group

    @property
    def k(self) -> int:
        return self.local.k

    def rss(self, P, index):
        total = self.local.rss(P, index).clone()
        dist.all_reduce(total, group=self.group)
        return torch.where(torch.isfinite(total), total, torch.full_like(total, torch.inf))

    def triangular(self, P, index):
        mine = self.local.triangular(P, index).contiguous()
        parts = [torch.empty_like(mine) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(parts, mine, group=self.group)
        R = torch.linalg.qr(torch.cat(parts, dim=1), mode="r")[1]
        return R[:, : mine.shape[2], :]

    def totals(self):
        totals = self.local.totals().clone()
        dist.all_reduce(totals, group=self.group)
        return totals


@dataclass(frozen=True)
class FitSpec:
    """The problem without its rows: what every rank needs besides its own slice (picklable:
    the formula travels as text, since a parsed formula holds compiled code)."""

    formula: str
    param_names: tuple[str, ...]
    variables: tuple[str, ...]
    target: str
    p0: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    settings: object
    """The FitSettings, with ``threads`` resolved for one rank."""
    n_rows: int
    """Rows of the whole table: every rank decides on this count, so all decide alike."""
    starts: torch.Tensor | None = None

    @classmethod
    def of(cls, problem: Problem, settings) -> FitSpec:
        """The spec of a whole-table problem, to fit with ``settings``."""
        model = problem.model
        return cls(model.formula.text, model.param_names, model.variables, problem.target, problem.p0,
                   problem.lower, problem.upper, settings, int(problem.data.X.shape[1]), problem.starts)

    def problem(self, shard: FitData) -> Problem:
        """This rank's problem: the whole problem's parameters, its own rows."""
        from paratrain.models.formula import parse_formula

        model = Model(parse_formula(self.formula), self.param_names, self.variables)
        return Problem(model, shard, self.p0, self.lower, self.upper, self.target, True, self.starts)


@dataclass(frozen=True)
class CurveFitJob:
    """What each local worker runs (a ``launch.local.Job``); its rows are in ``folder`` as .npy files."""

    spec: FitSpec
    folder: Path
    threads: int
    timeout_s: float = TIMEOUT_S
    ends_at_once: bool = True
    """Nothing to finish on a stop (rank 0's result is returned at the very end): see launch.local.Job."""

    def run(self, rank: int, world_size: int, local_rank: int, store) -> dict | None:
        """Fit on this rank's rows; rank 0 returns the solution (see :func:`decode_solution`)."""
        from paratrain.launch.env import destroy_process_group, init_process_group
        from paratrain.strategies import WorkerContext

        lo, hi = shard_bounds(self.spec.n_rows, rank, world_size)
        # Memory-mapped: each worker reads only its own slice of a table that may be large.
        arrays = {name: np.load(self.folder / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        shard = FitData(*(torch.tensor(np.array(arrays[name][lo:hi]))[None] for name in _ARRAYS))
        init_process_group(WorkerContext(rank=rank, world_size=world_size, local_rank=local_rank),
                           self.timeout_s, store)
        try:
            solution, totals = fit_rank(self.spec, shard, rank, world_size)
            # Leave together: a rank that tears down gloo while a peer is still inside a
            # collective makes the peer abort ("terminate called without an active exception").
            dist.barrier()
        finally:
            destroy_process_group()
        return {"solution": encode_solution(solution, totals)} if rank == 0 else None


def shard_bounds(n_rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [lo, hi) of ``rank``: contiguous, sizes differing by at most one."""
    return rank * n_rows // world_size, (rank + 1) * n_rows // world_size


def check_rows(n_rows: int, workers: int) -> None:
    """Every rank needs rows of its own (two, so that no slice is a single point)."""
    if n_rows < 2 * workers:
        raise ConfigError(f"workers={workers} needs at least {2 * workers} rows; the data has {n_rows}")


def fit_distributed(problem: Problem, settings, workers: int) -> tuple[Solution, torch.Tensor]:
    """Run the fit on ``workers`` local processes; returns rank 0's solution and totals."""
    from paratrain.launch.env import default_threads
    from paratrain.launch.local import launch_local
    from paratrain.launch.scratch import make_scratch

    check_rows(int(problem.data.X.shape[1]), workers)
    threads = settings.threads or default_threads(workers)
    spec = FitSpec.of(problem, replace(settings, threads=threads))
    # A 0700 folder for the rows; the launcher puts its own files in it too and removes it,
    # and its workers remove it when this process is killed.
    folder = make_scratch("curvefit")
    try:
        for name, tensor in zip(_ARRAYS, (problem.data.X, problem.data.y, problem.data.w)):
            np.save(folder / f"{name}.npy", tensor[0].numpy())
        result = launch_local(CurveFitJob(spec, folder, threads), workers, scratch=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return decode_solution(result["solution"])


def fit_under_torchrun(problem: Problem, settings, env) -> tuple[Solution, torch.Tensor]:
    """This rank's part of a fit across every rank of a torchrun job (``env``: a TorchrunEnv).

    Every rank must call it with the same table and settings; each keeps its own slice of
    the rows, and every rank returns the same solution. A process group that the caller
    already joined is left as it is (the fit uses a gloo group of its own beside it).
    """
    from paratrain.launch.env import default_threads, init_process_group
    from paratrain.strategies import WorkerContext

    n_rows = int(problem.data.X.shape[1])
    check_rows(n_rows, env.world_size)
    spec = FitSpec.of(problem, replace(settings, threads=settings.threads or default_threads(env.local_world_size)))
    lo, hi = shard_bounds(n_rows, env.rank, env.world_size)
    data = problem.data
    shard = FitData(data.X[:, lo:hi].clone(), data.y[:, lo:hi].clone(), data.w[:, lo:hi].clone())
    if dist.is_initialized():
        # The caller's own group (perhaps NCCL, perhaps busy): the fit's CPU collectives get their own.
        group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=TIMEOUT_S))
    else:
        ctx = WorkerContext(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank)
        init_process_group(ctx, TIMEOUT_S)  # env://: torchrun's MASTER_ADDR and MASTER_PORT
        group = None
    try:
        result = fit_rank(spec, shard, env.rank, env.world_size, group)
        dist.barrier(group=group)  # leave together (see CurveFitJob.run)
    finally:
        dist.destroy_process_group(group)  # the fit's own group, or the default one it joined
    return result


def fit_rank(spec: FitSpec, shard: FitData, rank: int, world_size: int, group=None) -> tuple[Solution, torch.Tensor]:
    """The SPMD body: fit on this rank's rows, every answer reduced over ``group`` (None: the default group)."""
    from paratrain.curvefit.evaluator import LocalEvaluator
    from paratrain.curvefit.fit import MIDDLE_ROWS, run_fit

    problem = spec.problem(shard)
    full = DistributedEvaluator(LocalEvaluator(problem.model, shard), group)
    # Subsets are decided on the global row count, so every rank makes the same choice.
    explore = _subset(problem.model, shard, spec, spec.settings.solve.explore_rows, world_size, rank, group)
    middle = (_subset(problem.model, shard, spec, MIDDLE_ROWS, world_size, rank, group)
              if spec.n_rows > 16 * MIDDLE_ROWS else None)
    return run_fit(problem, spec.settings, full, explore, middle)


def _subset(model, shard, spec: FitSpec, rows: int, world_size: int, rank: int, group=None):
    """This rank's share of an evenly spread row subset, wrapped to reduce over ranks (None: all rows)."""
    from paratrain.curvefit.evaluator import LocalEvaluator
    from paratrain.curvefit.fit import explore_evaluator

    if spec.n_rows <= rows:
        return None
    local = explore_evaluator(model, shard, spec.settings, seed=spec.settings.seed + rank,
                              rows=max(1, -(-rows // world_size)))
    return DistributedEvaluator(local or LocalEvaluator(model, shard), group)


def encode_solution(solution: Solution, totals: torch.Tensor) -> str:
    """The solution as text that survives JSON exactly (NaN and infinity included): a torch file in base64."""
    buffer = io.BytesIO()
    torch.save({"params": solution.params, "rss": solution.rss, "R": solution.R, "n_iter": solution.n_iter,
                "status": solution.status, "starts_used": solution.starts_used, "totals": totals}, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_solution(text: str) -> tuple[Solution, torch.Tensor]:
    """Inverse of :func:`encode_solution` (tensors only: ``weights_only`` loading runs no code)."""
    result = torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)
    solution = Solution(result["params"], result["rss"], result["R"], result["n_iter"], result["status"],
                        int(result["starts_used"]))
    return solution, result["totals"]
