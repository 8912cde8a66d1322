"""The body of one worker process, whoever started it."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from paratrain.config import FitConfig
from paratrain.launch.env import destroy_process_group, init_process_group, pick_device
from paratrain.strategies import WorkerContext, strategy_class
from paratrain.train import interrupts
from paratrain.train.collectives import collective
from paratrain.train.loop import run_training


@dataclass(frozen=True)
class WorkerJob:
    """What every worker is given: picklable, so that spawn can send it."""

    config: FitConfig
    source: Any
    run_dir: Path
    resume: bool
    threads: int
    callbacks: tuple = ()

    @property
    def timeout_s(self) -> float:
        """Seconds the rendezvous and every collective may wait."""
        return self.config.parallel.timeout_s

    def run(self, rank: int, world_size: int, local_rank: int, store: "dist.Store | None" = None) -> dict | None:
        """What a launched worker process does with this job (see launch.local.Job)."""
        return run_worker(self, rank, world_size, local_rank, store)


def run_worker(job: WorkerJob, rank: int, world_size: int, local_rank: int, store: "dist.Store | None" = None) -> dict | None:
    """Set up threads, device and process group; train; always leave the group."""
    _ensure_logging(job.config.output.verbosity)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    device = pick_device(job.config.train.device, local_rank)
    ctx = WorkerContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
    uses_group = strategy_class(job.config.parallel.strategy).needs_process_group
    if uses_group:
        with collective("process group rendezvous", rank, job.config.parallel.timeout_s):
            init_process_group(ctx, job.config.parallel.timeout_s, store)
    try:
        # fork_rng: an in-process run (the estimators) must leave the caller's RNG as it was.
        # handled(): SIGTERM, like Ctrl-C, stops an in-process run between two writes.
        with torch.random.fork_rng(devices=[]), interrupts.handled():
            return run_training(job.config, ctx, job.source, job.run_dir, job.resume, job.callbacks)
    finally:
        if uses_group:
            destroy_process_group()
        # In-process runs (the estimators) must not leave the caller's thread count changed.
        torch.set_num_threads(threads_before)


def _ensure_logging(verbosity: int) -> None:
    """Worker processes start with no logging set up: give the package logger a stderr handler."""
    logger = logging.getLogger("paratrain")
    logger.setLevel({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("paratrain: %(message)s"))
        logger.addHandler(handler)
