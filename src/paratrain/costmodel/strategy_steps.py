"""Each contender's real training step, timed inside the calibration's concurrent workers.

The structural model (collectives, compute, compression arithmetic) leaves out
costs no formula sees on a shared machine: RPC serialization of the parameter
server, Hogwild's writers bouncing the same cache lines between cores, Python
work inside the hooks. So calibration also runs every contender's own strategy
object through the training loop's ``train_step`` for a few steps on loopback;
the model adds the difference between that and its own loopback prediction
(the contender's residual) to what it predicts on other links.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from paratrain.costmodel.probes import Workload, typical

WARMUP_STEPS = 3
WINDOWS = 2
POWERSGD_WARMUP = 2
"""PowerSGD compresses from its third step here (training's default waits 10): the steady state is timed."""


def contenders_to_time() -> list[str]:
    """Every default contender that runs several processes."""
    from paratrain.strategies import default_contenders, split_contender, strategy_class

    return [c for c in default_contenders() if strategy_class(split_contender(c)[0]).needs_process_group]


def time_contender(workload: Workload, contender: str, rank: int, world_size: int, steps: int) -> float:
    """Seconds per optimizer step of ``contender`` on this rank: the faster of two windows of ``steps``
    after a warm-up, each a whole number of local-SGD periods where it has one (its average amortized)."""
    from paratrain.config import ParallelConfig
    from paratrain.strategies import WorkerContext, contender_options, create_strategy
    from paratrain.train.loop import StepContext, make_loss, train_step
    from paratrain.train.precision import Precision

    spec, own = contender_options(contender, powersgd_warmup=POWERSGD_WARMUP)
    options = ParallelConfig(strategy=spec, workers=world_size, options=own)
    strategy = create_strategy(spec, options)
    period = getattr(strategy, "period", 1)
    steps = max(period, (steps // period) * period)
    model, optimizer = workload.build()
    ctx = WorkerContext(rank=rank, world_size=world_size, local_rank=rank)
    try:
        wrapped = strategy.wrap_model(model, ctx)
        step_ctx = StepContext(wrapped, strategy, optimizer, None, None, Precision("fp32", ctx.device),
                               make_loss(workload.task))
        x, y = workload.batch(workload.batch_size)
        losses: list[torch.Tensor] = []
        for step in range(WARMUP_STEPS + POWERSGD_WARMUP):
            train_step(step_ctx, x, y, workload.batch_size, step, losses)
        windows = []
        for _ in range(WINDOWS):
            strategy.barrier()
            start = time.perf_counter()
            for step in range(steps):
                train_step(step_ctx, x, y, workload.batch_size, step, losses)
            windows.append((time.perf_counter() - start) / steps)
        strategy.barrier()
        return typical(windows)
    finally:
        strategy.teardown()


def time_contenders(workload: Workload, rank: int, world_size: int, steps: int, end: float | None) -> dict[str, float]:
    """Mean over ranks of each contender's step; contenders that do not fit before ``end`` are left out."""
    results: dict[str, float] = {}
    for contender in contenders_to_time():
        go = torch.tensor([1 if end is None or time.time() < end else 0])
        dist.broadcast(go, src=0)
        if not go.item():
            break
        seconds = torch.tensor([time_contender(workload, contender, rank, world_size, steps)], dtype=torch.float64)
        dist.all_reduce(seconds)
        results[contender] = float(seconds.item()) / world_size
    return results
