"""The `torch-ddp` reference row: a plain, hand-written PyTorch DDP loop.

Same rows, split and shards (paratrain's data preparation), same model, optimizer, schedule and
batch as the paratrain rows; the loop itself is the textbook one (shuffle, slice, forward,
backward inside DistributedDataParallel, step), so that bench shows what paratrain's own loop,
strategy hooks and bookkeeping cost. It writes the same per-epoch records as metrics.jsonl
(``samples_per_s``, ``train_seconds``, ``val_loss``, ``evals`` inside each epoch), which the
analysis reads like any run's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from paratrain.config import FitConfig


@dataclass
class TorchDDPJob:
    """A launch.local Job: every worker trains its shard under torch's DistributedDataParallel."""

    config: FitConfig
    source: Any
    """The table (a DataFrame) or its path, as fit() takes it."""
    threads: int
    max_seconds: float | None = None
    """Stop after the epoch in which training seconds pass this (None: run every epoch)."""

    @property
    def timeout_s(self) -> float:
        return self.config.parallel.timeout_s

    def run(self, rank: int, world_size: int, local_rank: int, store=None) -> dict | None:
        import torch

        from paratrain.launch.env import destroy_process_group, init_process_group, pick_device
        from paratrain.strategies import WorkerContext

        torch.set_num_threads(self.threads)
        # The device and backend paratrain's rows get (gloo on CPU, NCCL on CUDA): a fair reference.
        device = pick_device(self.config.train.device, local_rank)
        ctx = WorkerContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)
        init_process_group(ctx, self.timeout_s, store)
        try:
            records = train_plain_ddp(self.config, self.source, rank, world_size, self.max_seconds, device)
        finally:
            destroy_process_group()
        return {"records": records} if rank == 0 else None


def train_plain_ddp(config: FitConfig, source: Any, rank: int, world_size: int,
                    max_seconds: float | None, device: Any = None) -> list[dict[str, Any]]:
    """Train on this rank's shard; every rank returns the per-epoch records."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from paratrain.data.prepare import prepare_data
    from paratrain.models.registry import ModelSpec, build_model
    from paratrain.train.loop import epoch_generator
    from paratrain.train.metrics import peak_memory_bytes
    from paratrain.train.optim import build_optimizer, build_scheduler

    device = device or torch.device("cpu")
    torch.manual_seed(config.train.seed)
    data = prepare_data(config, source, rank, world_size, device)
    model = build_model(ModelSpec(config.model, tuple(data.feature_names), data.n_outputs)).to(device)
    model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    batch = config.train.batch_size
    steps = -(-len(data.x_train) // batch)
    optimizer = build_optimizer(model.parameters(), config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.train.epochs, steps)
    classify = data.task == "classification"
    loss_fn = torch.nn.functional.cross_entropy if classify else torch.nn.functional.mse_loss
    checkpoints = {round(steps * k / config.train.evals_per_epoch) for k in range(1, config.train.evals_per_epoch)}
    records, trained = [], 0.0

    def now() -> float:
        if device.type == "cuda":  # kernels run asynchronously: a clock read waits for them
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            out = model.module(data.x_val)
            target = data.y_val if classify else data.y_val.unsqueeze(-1)
            sums = torch.tensor([float(loss_fn(out, target, reduction="sum")), len(data.y_val)], dtype=torch.float64,
                                device=device)
        model.train()
        dist.all_reduce(sums)
        return float(sums[0] / sums[1])

    for epoch in range(config.train.epochs):
        # paratrain's shuffle seeds (per seed, epoch and rank): the same batches in the same order.
        generator = epoch_generator(config, epoch, rank)
        x, y = data.x_train, data.y_train
        if generator is not None:
            order = torch.randperm(len(x), generator=generator).to(device)
            x, y = x[order], y[order]
        started, validating, evals = now(), 0.0, []
        for step in range(steps):
            xb, yb = x[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
            optimizer.zero_grad(set_to_none=True)
            out = model(xb)
            loss_fn(out if classify else out.squeeze(-1), yb).backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if step + 1 in checkpoints:
                paused = now()
                evals.append({"epoch_fraction": (step + 1) / steps,
                              "train_seconds": paused - started - validating, "val_loss": validate()})
                validating += time.perf_counter() - paused
        seconds = now() - started - validating
        trained += seconds
        # Rank 0's clock decides for everyone: the flag rides on the one all-reduce of the epoch's end.
        flags = torch.tensor([1.0 if rank == 0 and max_seconds is not None and trained >= max_seconds else 0.0],
                             device=device)
        dist.all_reduce(flags)
        record = {"epoch": epoch + 1, "val_loss": validate(), "train_seconds": seconds, "seconds": seconds,
                  "samples_per_s": len(data.x_train) * world_size / seconds if seconds > 0 else None,
                  "peak_memory_bytes": peak_memory_bytes(device)}
        if evals:
            record["evals"] = evals
        records.append(record)
        if flags.item() > 0:
            break
    return records
