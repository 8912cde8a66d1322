"""`async`: asynchronous training through a parameter server, with bounded staleness.

One :class:`ParameterServer` holds the parameters as one flat fp32 vector and
runs the optimizer on them; it lives in rank 0's process. Every rank, rank 0
included, is a trainer: it computes gradients on its own shard, pushes them to
the server and gets the fresh parameters back in the same call, without
waiting for the other trainers. The server applies each push as one optimizer
step, under a lock, in the order pushes arrive.

``--max-staleness S`` gives stale-synchronous parallel (SSP): each trainer has
a clock (its pushes so far); a trainer more than S pushes ahead of the slowest
trainer still training gets its reply only when the slowest catches up.
S=0 gives synchronous rounds; no S gives fully asynchronous training.

Transport is torch.distributed.rpc over TensorPipe, on its own rendezvous
store hosted by rank 0 (its port is chosen by the OS and sent to the other
ranks over the gloo group, which also carries metrics and barriers). Remote
trainers reach the server through ``rpc_async``; rank 0's trainer calls it
directly. A waiting push blocks no RPC thread: the server answers with a
Future it completes later (``@rpc.functions.async_execution``). The server and the RPC live in
strategies/async_server.py, which this module imports only when a run starts: building or
validating a config never loads them.

Limits: buffers (BatchNorm statistics) are not served, each rank keeps its
own and rank 0's are saved; fp16 gradient scaling is refused; a snapshot for
the checkpoint is taken when rank 0 writes it, so it may include a few of the
next epoch's updates from faster trainers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from paratrain.errors import ConfigError
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.options import StrategyOptions, check_int_option

if TYPE_CHECKING:
    import torch.distributed as dist

    from paratrain.strategies.async_server import ParameterServer

log = logging.getLogger("paratrain")


@dataclass(frozen=True)
class AsyncOptions(StrategyOptions):
    """async's settings."""

    max_staleness: int | None = None
    """A worker more than this many updates ahead of the slowest one waits (None: unbounded)."""

    def __post_init__(self) -> None:
        if self.max_staleness is not None:
            check_int_option("max_staleness", self.max_staleness, 0)


class AsyncParameterServerStrategy(ProcessGroupStrategy):
    """Trainers push gradients to a parameter server without waiting for each other."""

    name = "async"
    bench_specs = ("async",)
    supports_accumulation = True
    description = "asynchronous parameter server on rank 0 (bounded staleness with --max-staleness)"
    Options = AsyncOptions
    deterministic = False  # the order in which trainers' pushes reach the server is the scheduler's

    def __init__(self, argument: str | None = None, options=None) -> None:
        super().__init__(argument, options)
        self.max_staleness = self.own_options.max_staleness
        self.timeout_s = options.timeout_s if options is not None else 300.0
        self._params: list[torch.nn.Parameter] = []
        self._numel = 0
        self._rank = 0
        self._world_size = 1
        self._server: "ParameterServer | None" = None
        self._rpc_store: "dist.Store | None" = None
        self._sent_recipe = False
        self._restored: dict | None = None

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        # Imported here: torch.distributed.rpc is loaded only by a run that uses it.
        from paratrain.strategies.async_server import SERVER_RANK, ParameterServer, serve, start_rpc

        self._params = list(model.parameters())
        self._numel = sum(p.numel() for p in self._params)
        self._rank, self._world_size = ctx.rank, ctx.world_size
        if ctx.rank == SERVER_RANK:
            restored = self._restored or {}
            start = restored.get("params")
            if start is None:
                start = torch.cat([p.detach().reshape(-1).cpu() for p in self._params])
            self._server = ParameterServer(start, ctx.world_size, self.max_staleness, restored.get("optimizer"))
            serve(self._server)  # before RPC starts: no remote call can arrive before the server exists
        if ctx.world_size > 1:
            self._rpc_store = start_rpc(ctx, self.timeout_s)
        self._load(self._pull())
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler) -> None:
        if scaler is not None:
            raise ConfigError("strategy='async' does not support fp16 gradient scaling; use --precision fp32 or bf16")
        if len(optimizer.param_groups) != 1:
            raise ConfigError(f"strategy='async' needs one parameter group, got {len(optimizer.param_groups)}")
        grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).cpu()
                           for p in self._params])
        hyper = {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
        recipe = None if self._sent_recipe else (type(optimizer), dict(optimizer.defaults))
        self._sent_recipe = True
        self._load(self._push(grads, hyper, recipe))
        # The update happened on the server. A step without gradients changes
        # nothing here but tells the local scheduler the optimizer has stepped.
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()

    def communication_stats(self) -> CommStats | None:
        if self._server is not None:
            log.debug("async: %(updates)d updates, max clock gap %(max_clock_gap)d, "
                      "max staleness %(max_staleness)d updates", self._server.stats())
        if self._world_size == 1:
            return None
        # A remote trainer sends its fp32 gradients and receives fp32 parameters
        # every step (rank 0's trainer reaches the server in memory).
        return CommStats(bytes_per_step=8.0 * self._numel, dense_bytes_per_step=4.0 * self._numel)

    def state_dict(self) -> dict:
        if self._server is None:
            return {}
        return {**self._server.state_dict(), "stats": self._server.stats()}

    def load_state_dict(self, state: dict) -> None:
        self._restored = dict(state) if state else None

    def barrier(self) -> None:
        # A trainer at the final barrier has pushed its last gradient; once all
        # are here every update is applied, and each takes the final parameters
        # (rank 0 saves its model next).
        self._finish()
        super().barrier()
        self._load(self._pull())

    def teardown(self) -> None:
        if self._rpc_store is not None:
            from paratrain.strategies.async_server import shutdown_rpc

            shutdown_rpc(self.timeout_s)
            self._rpc_store = None
        if self._server is not None:
            from paratrain.strategies.async_server import stop_serving

            log.debug("async: final server stats %s", self._server.stats())
            stop_serving(self._server)

    # -- talking to the server ------------------------------------------------

    def _push(self, grads: torch.Tensor, hyper: dict, recipe: tuple | None) -> torch.Tensor:
        from paratrain.strategies.async_server import push_remote, wait_for

        if self._server is not None:
            return wait_for(self._server.push(self._rank, grads, hyper, recipe), self.timeout_s)
        return push_remote(self._rank, grads, hyper, recipe, self.timeout_s)

    def _pull(self) -> torch.Tensor:
        from paratrain.strategies.async_server import pull_remote

        if self._server is not None:
            return self._server.pull(self._rank)
        return pull_remote(self._rank, self.timeout_s)

    def _finish(self) -> None:
        from paratrain.strategies.async_server import finish_remote

        if self._server is not None:
            self._server.finish(self._rank)
        else:
            finish_remote(self._rank, self.timeout_s)

    def _load(self, flat: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self._params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
