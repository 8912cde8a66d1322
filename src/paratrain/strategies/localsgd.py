"""`localsgd:PERIOD`: local SGD (periodic model averaging), with optional synchronous warm-up.

Each worker steps on its own shard with its own optimizer; every PERIOD
optimizer steps the parameters (and floating-point buffers such as batch-norm
statistics) are averaged over the workers. On average that sends 1/PERIOD of
what `ddp` sends. With ``sync_warmup=N`` (post-local SGD) the first N steps
all-reduce gradients as `ddp` does, so that the early, noisy phase is
synchronous. Optimizer state is not averaged (standard local SGD).

Averaging is keyed on the optimizer-step count, which the checkpoint keeps,
so a resumed run averages on the same steps. Between averages the workers'
models differ: each epoch's validation metrics sum every worker's model on
its own validation rows, and when training ends the models are averaged.
Every rank checkpoints its own model and optimizer (``replicas_differ``), so a
resumed run continues each worker where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from paratrain.errors import ConfigError
from paratrain.strategies.base import ByteMeter, CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.collectives import all_ranks_resume_their_own, all_reduce_mean_, broadcast_
from paratrain.strategies.options import StrategyOptions, check_int_option

if TYPE_CHECKING:
    from paratrain.config import ParallelConfig


@dataclass(frozen=True)
class LocalSGDOptions(StrategyOptions):
    """localsgd's settings."""

    sync_warmup: int = 0
    """Synchronous steps (gradients all-reduced) before local steps begin (post-local SGD)."""

    def __post_init__(self) -> None:
        check_int_option("sync_warmup", self.sync_warmup, 0)


class LocalSGD(ProcessGroupStrategy):
    """Workers train alone and average parameters every PERIOD optimizer steps."""

    name = "localsgd"
    bench_specs = ("localsgd:8",)
    description = "local SGD: workers step alone, parameters averaged every PERIOD steps (localsgd:8)"
    replicas_differ = True
    Options = LocalSGDOptions
    conformance_spec = "localsgd:4"  # averages several times per epoch on the suite's small problem

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        self.period = parse_period(argument)
        self._store_options(options)
        self.sync_warmup = self.own_options.sync_warmup
        self.steps_done = 0
        self._params: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._world_size = 1
        self._meter = ByteMeter()
        self._unaveraged_steps = 0
        self._rank = 0
        self._loaded_rank: int | None = None

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        self._world_size = ctx.world_size
        self._rank = ctx.rank
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._buffers = [b for b in model.buffers() if b.is_floating_point()]
        # A fresh run seeds every worker identically, but be sure they start from one point;
        # a resumed run where every rank loaded its own checkpoint keeps the models it had.
        if not all_ranks_resume_their_own(self._loaded_rank, ctx):
            broadcast_(list(model.parameters()) + list(model.buffers()), src=0)
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        if self.steps_done < self.sync_warmup:
            grads = [p.grad for p in self._params if p.grad is not None]
            self._meter.bytes_sent += all_reduce_mean_(grads, self._world_size)
        super().optimizer_step(optimizer, scaler)

    def after_optimizer_step(self, model: torch.nn.Module, step: int) -> None:
        self.steps_done += 1
        self._meter.steps += 1
        local_steps = self.steps_done - self.sync_warmup
        if local_steps > 0:
            self._unaveraged_steps += 1
        if local_steps > 0 and local_steps % self.period == 0:
            self._average()

    def synchronize_model(self, model: torch.nn.Module) -> bool:
        # One last average when training ends, so that the saved model is the workers'
        # consensus rather than rank 0's drifted copy. (Per-epoch validation combines
        # each rank's own model; averaging every epoch would cost extra traffic.)
        if self._unaveraged_steps > 0:
            self._average()
            return True
        return False

    def _average(self) -> None:
        self._meter.bytes_sent += all_reduce_mean_(self._params + self._buffers, self._world_size)
        self._unaveraged_steps = 0

    def communication_stats(self) -> CommStats | None:
        return self._meter.take(sum(p.numel() * p.element_size() for p in self._params))

    def state_dict(self) -> dict:
        return {"steps_done": self.steps_done, "unaveraged_steps": self._unaveraged_steps, "rank": self._rank}

    def load_state_dict(self, state: dict) -> None:
        self.steps_done = int(state.get("steps_done", 0))
        self._unaveraged_steps = int(state.get("unaveraged_steps", 0))
        self._loaded_rank = state.get("rank")


def parse_period(argument: str | None) -> int:
    """'8' -> 8; anything but an integer >= 1 is a ConfigError."""
    if argument is None:
        raise ConfigError("strategy='localsgd' needs a period, e.g. localsgd:8 (average parameters every 8 steps)")
    try:
        period = int(argument)
    except ValueError:
        period = 0
    if period < 1:
        raise ConfigError(f"strategy='localsgd:{argument}': PERIOD must be an integer >= 1, e.g. localsgd:8")
    return period
