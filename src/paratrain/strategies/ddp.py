"""`ddp`: synchronous data parallel with torch's DistributedDataParallel.

Each rank computes gradients on its own shard; DDP all-reduces (averages)
them in buckets overlapped with the backward pass, so every rank takes the
same optimizer step. Gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from paratrain.strategies.base import Strategy, WorkerContext


class DistributedDataParallelStrategy(Strategy):
    """Synchronous all-reduce of gradients every optimizer step."""

    name = "ddp"
    needs_process_group = True
    description = "synchronous data parallel (all-reduce of gradients every step)"

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sync_context(self, model: torch.nn.Module, sync: bool) -> ContextManager:
        # Gradient accumulation: skip the all-reduce on all but the last
        # micro-step; the gradients summed locally are reduced once, which is
        # what makes K micro-batches equal one batch K times larger.
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        dist.barrier()
