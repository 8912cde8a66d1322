"""Process-group set-up and device/thread choice for one worker."""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist

from paratrain.launch.resources import usable_cores
from paratrain.launch.store import torchrun_worker_store
from paratrain.launch.torchrun_env import torchrun_env
from paratrain.strategies import WorkerContext

def pick_device(requested: str, local_rank: int) -> torch.device:
    """CUDA when asked for (or 'auto' and present), one GPU per local rank; else CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from paratrain.errors import ConfigError

            raise ConfigError("device='cuda' but no CUDA device is available; use --device cpu")
        if local_rank >= torch.cuda.device_count():
            from paratrain.errors import ConfigError

            # NCCL refuses two ranks on one GPU; say so instead of failing inside NCCL.
            raise ConfigError(
                f"local rank {local_rank} has no GPU of its own: this machine has {torch.cuda.device_count()}; "
                "use at most that many workers per machine, or --device cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def default_threads(workers_on_this_machine: int) -> int:
    """Split the cores between the workers: more threads than cores thrash (seen: 7x slower)."""
    return max(1, usable_cores() // max(1, workers_on_this_machine))


def init_process_group(
    ctx: WorkerContext, timeout_s: float, store: "dist.Store | None" = None
) -> None:
    """Join the job's process group: gloo on CPU, NCCL on CUDA; every wait bounded by timeout_s.

    Without a ``store``: under torchrun, one whose server on rank 0 listens on MASTER_ADDR only
    (launch/store.py torchrun_worker_store), where it can; else torch's env:// store.
    """
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=timeout_s)
    if store is None:
        env = torchrun_env()
        store = torchrun_worker_store(env, timeout_s) if env is not None else None
    if store is None:
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)
    else:
        dist.init_process_group(backend, store=store, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)


def destroy_process_group() -> None:
    """Leave the group cleanly (an abrupt exit can abort the other ranks)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
