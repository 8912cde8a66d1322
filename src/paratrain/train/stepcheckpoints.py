"""Checkpoints inside an epoch (``train.checkpoint_every_steps``), resumable exactly.

A checkpoint after step n of an epoch holds, besides the model, optimizer, schedule and
scaler, what the epoch's metrics line still needs from the steps done so far: their summed
loss and rows over all ranks, their training time, and the validations inside the epoch
(``LoopState.epoch_*``). A resume shuffles the epoch as before (the order is seeded by seed,
epoch and data rank), skips the n steps and adds the carried sums at the epoch's end. Dropout
masks are reseeded per step (``step_seed``), so the steps after a resume draw the masks the
uninterrupted run drew.

No metrics line is written here: metrics.jsonl stays one line per finished epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from paratrain.config import FitConfig
from paratrain.strategies import WorkerContext
from paratrain.strategies.step import StepContext
from paratrain.train import interrupts
from paratrain.train.checkpointing import save_checkpoint


def step_seed(config: FitConfig, epoch: int, step: int, data_rank: int) -> int:
    """Seed of the global RNG (dropout) before the epoch's step ``step`` (0-based) on ``data_rank``.

    The data rank, not the rank: the ranks of one tensor-parallel group need the same masks.
    """
    return config.train.seed * 1_000_003 + epoch * 7919 + data_rank + 1 + (step + 1) * 104_729


class StepCheckpoints:
    """The ``after_step`` hook that writes a checkpoint every ``checkpoint_every_steps`` optimizer steps.

    Steps count over the whole run (``LoopState.step``); the epoch's last step is left to the
    epoch's own checkpoint. Every rank calls the hook after the same steps (equal shards).
    """

    def __init__(self, ctx: StepContext, config: FitConfig, state: Any, worker: WorkerContext, run_dir: Path,
                 steps_in_epoch: int, rows_per_step: int, losses: list[torch.Tensor],
                 evals: Callable[[], list[dict[str, Any]]], seconds: Callable[[], float]) -> None:
        self.ctx, self.config, self.state, self.worker, self.run_dir = ctx, config, state, worker, run_dir
        self.every = config.train.checkpoint_every_steps
        self.steps_in_epoch = steps_in_epoch
        self.rows_per_step = rows_per_step
        self.first_step = state.epoch_step
        self.losses = losses
        """This session's micro-batch losses of the epoch so far (train_epoch appends to it)."""
        self.evals = evals
        """The epoch's validations so far (those carried from a resumed checkpoint included)."""
        self.seconds = seconds
        """This rank's training seconds in this session's part of the epoch so far."""
        self.written = 0
        """Checkpoints written in this session's part of the epoch."""
        self.seconds_spent = 0.0
        """Seconds this rank spent on them (the all-reduce and the write)."""

    def after_step(self, done: int) -> None:
        if self.state.step % self.every != 0 or done >= self.steps_in_epoch:
            return
        begun = time.perf_counter()
        strategy = self.ctx.strategy
        world = self.worker.world_size
        counts = 1.0 if strategy.reports_metrics(self.worker) else 0.0
        loss_sum = torch.stack(self.losses).double().sum().item() if self.losses else 0.0
        rows = (done - self.first_step) * self.rows_per_step
        # One all-reduce for the loss, rows and each rank's seconds (its own slot: the part lasted as
        # long as its slowest rank). It also keeps rank 0 from writing before the others got here.
        slots = [0.0] * world
        slots[self.worker.rank] = self.seconds()
        totals = strategy.all_reduce_sum(torch.tensor([loss_sum * counts, rows * counts, *slots],
                                                      dtype=torch.float64))
        state = dict(self.state.__dict__)
        state.update(epoch_step=done,
                     epoch_loss_sum=self.state.epoch_loss_sum + float(totals[0]),
                     epoch_rows=self.state.epoch_rows + int(totals[1]),
                     epoch_train_seconds=self.state.epoch_train_seconds + float(max(totals[2:].tolist())),
                     epoch_evals=list(self.evals()))
        # Ctrl-C or SIGTERM waits for the write: checkpoint.pt is the old one or the new one.
        with interrupts.deferred():
            save_checkpoint(self.run_dir, self.worker, strategy, self.ctx.model, self.ctx.optimizer,
                            self.ctx.scheduler, self.ctx.scaler, state)
        self.written += 1
        self.seconds_spent += time.perf_counter() - begun
