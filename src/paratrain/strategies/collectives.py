"""Collectives the model-averaging strategies share (localsgd, sparse), on torch.distributed."""

from __future__ import annotations

import torch
import torch.distributed as dist

from paratrain.strategies.base import WorkerContext


def all_ranks_resume_their_own(loaded_rank: int | None, ctx: WorkerContext) -> bool:
    """True when every rank loaded its own checkpoint (``loaded_rank``: the rank that wrote the state
    this one loaded, None on a fresh run). A collective: every rank calls it and gets the same answer,
    so all of them broadcast, or none."""
    flag = torch.tensor([1 if loaded_rank == ctx.rank else 0], device=ctx.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def all_reduce_mean_(tensors: list[torch.Tensor], world_size: int) -> int:
    """Average tensors over ranks in place with one all-reduce; returns the bytes sent."""
    if not tensors:
        return 0
    flat = torch.cat([t.detach().reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size
    for tensor, chunk in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.detach().copy_(chunk.view_as(tensor))
    return flat.numel() * flat.element_size()


def broadcast_(tensors: list[torch.Tensor], src: int) -> None:
    """Copy rank ``src``'s values into every rank's tensors (one flat broadcast per dtype)."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for group in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=src)
        for tensor, chunk in zip(group, flat.split([t.numel() for t in group])):
            tensor.detach().copy_(chunk.view_as(tensor))
