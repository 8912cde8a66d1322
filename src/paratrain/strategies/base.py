"""The one interface every parallel strategy implements.

A strategy is a small object with no-op defaults: it wraps the model, says
whether gradients should be synchronised on a micro-step, reduces metrics
across workers, and tears down. The training loop calls these hooks and never
asks which strategy it has; capabilities are class attributes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, ContextManager

import torch


@dataclass(frozen=True)
class WorkerContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints progress."""
        return self.rank == 0


class Strategy:
    """Base strategy: one process, nothing to synchronise."""

    name: ClassVar[str] = "base"
    needs_process_group: ClassVar[bool] = False
    """True when the strategy talks to other ranks through torch.distributed."""
    supports_accumulation: ClassVar[bool] = True
    description: ClassVar[str] = ""

    def __init__(self, argument: str | None = None) -> None:
        if argument is not None:
            from paratrain.errors import ConfigError

            raise ConfigError(f"strategy {self.name!r} takes no argument, got {self.name}:{argument}")

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        """Return the module the loop trains (possibly a wrapper around ``model``)."""
        return model

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain module inside whatever ``wrap_model`` returned (for saving)."""
        return getattr(model, "module", model)

    def sync_context(self, model: torch.nn.Module, sync: bool) -> ContextManager:
        """Context for one micro-step's backward; ``sync`` is False on all but the last."""
        return contextlib.nullcontext()

    def after_optimizer_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after every optimizer step (model averaging strategies use it)."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a metric tensor over workers (identity on one process)."""
        return tensor

    def barrier(self) -> None:
        """Wait for every worker (no-op on one process)."""

    def teardown(self) -> None:
        """Release what setup took."""
