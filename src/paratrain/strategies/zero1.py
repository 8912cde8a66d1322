"""`zero1`: DDP for the gradients, the optimizer state split over the ranks (ZeRO stage 1).

Gradients are all-reduced as under ``ddp``; then each rank updates only the parameters
of its own partition, with that partition's optimizer state (Adam's two moments), and
broadcasts them to the others (torch's ``ZeroRedundancyOptimizer``). Same arithmetic
as ``ddp``; Adam's state per rank shrinks to about 1/N, for one more broadcast of the
parameters per step. Checkpoints stay whole: the state is gathered to rank 0 to save.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from paratrain.strategies.base import CommStats, OptimizerFactory
from paratrain.strategies.ddp import DistributedDataParallelStrategy
from paratrain.strategies.options import StrategyOptions


class ZeroRedundancyDataParallel(DistributedDataParallelStrategy):
    """DDP with torch's ZeroRedundancyOptimizer around the run's optimizer."""

    name = "zero1"
    supports_compression = False
    Options = StrategyOptions  # none of ddp's: its compression hooks are not combined with ZeRO here
    bench_specs = ()
    advise_specs = ("zero1",)
    description = "ddp with the optimizer state split over the workers (ZeRO-1); less memory for Adam's state"

    def build_optimizer(self, model: torch.nn.Module, make: OptimizerFactory) -> torch.optim.Optimizer:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        params = list(model.parameters())
        # The run's optimizer, built once to learn its class and settings (it has no state yet).
        template = make(params)
        accepted = inspect.signature(type(template).__init__).parameters
        defaults = {k: v for k, v in template.defaults.items() if k in accepted and k != "params"}
        groups = [{k: v for k, v in group.items() if k == "params" or v != defaults.get(k)}
                  for group in template.param_groups]
        return ZeroRedundancyOptimizer(groups, optimizer_class=type(template), **defaults)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        import torch.distributed as dist

        # Every rank sends its partition's state to rank 0 (a collective); only rank 0 has the whole.
        optimizer.consolidate_state_dict(to=0)
        return optimizer.state_dict() if dist.get_rank() == 0 else {}

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        # Every rank reads the whole state; each keeps its own partition's share.
        optimizer.load_state_dict(state)

    def communication_stats(self) -> CommStats | None:
        stats = super().communication_stats()
        if stats is None:
            return None
        # Besides DDP's all-reduce, each rank broadcasts its updated partition to the others:
        # about the parameters' bytes once more per step (fp32 parameters: the gradients' bytes).
        return CommStats(bytes_per_step=stats.bytes_per_step + self._dense_bytes,
                         dense_bytes_per_step=stats.dense_bytes_per_step)
