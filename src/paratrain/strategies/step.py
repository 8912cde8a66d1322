"""One optimizer step, as every data-parallel strategy takes it.

The loop hands each step to ``Strategy.train_step``; its default is
:func:`micro_batch_step` below. A strategy that must own the forward and
backward passes (a pipeline schedule) overrides the hook instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from paratrain.strategies.base import Strategy


@dataclass
class StepContext:
    """The objects one optimizer step needs."""

    model: torch.nn.Module
    """What the strategy's ``wrap_model`` built (a DDP wrapper, an FSDP module, a pipeline stage...)."""
    strategy: "Strategy"
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    precision: Any
    """train.precision.Precision: ``autocast()`` for the forward pass."""
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """Mean loss over a micro-batch."""


def micro_batch_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, micro_batch: int, step: int,
                     losses: list[torch.Tensor]) -> None:
    """One optimizer step over rows x (split into micro-batches of ``micro_batch`` rows).

    Appends each micro-batch's summed loss (a detached tensor) to ``losses``:
    converting to a number every step would cost a sync and several tiny ops.
    """
    ctx.optimizer.zero_grad(set_to_none=True)
    rows = len(x)
    starts = range(0, rows, micro_batch)
    for i, start in enumerate(starts):
        xb, yb = x[start : start + micro_batch], y[start : start + micro_batch]
        # Sync only on the last micro-step: earlier backwards accumulate locally.
        with ctx.strategy.sync_context(ctx.model, sync=i == len(starts) - 1):
            with ctx.precision.autocast():
                loss = ctx.loss_fn(ctx.model(xb), yb)
            # Weight by rows so that K micro-batches give the gradient of the mean
            # over the whole step, even when the last micro-batch is short.
            # With one micro-batch the weight is 1: skip the extra graph node.
            scaled = loss if len(xb) == rows else loss * (len(xb) / rows)
            (ctx.scaler.scale(scaled) if ctx.scaler else scaled).backward()
        losses.append(loss.detach() * len(xb))
    finish_step(ctx, step)


def finish_step(ctx: StepContext, step: int) -> None:
    """Apply the gradients, advance the schedule, run the strategy's after-step hook."""
    ctx.strategy.optimizer_step(ctx.optimizer, ctx.scaler)
    if ctx.scheduler is not None:
        ctx.scheduler.step()
    ctx.strategy.after_optimizer_step(ctx.model, step)
