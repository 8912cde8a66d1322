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
Future it completes later (``@rpc.functions.async_execution``).

Limits: buffers (BatchNorm statistics) are not served, each rank keeps its
own and rank 0's are saved; fp16 gradient scaling is refused; a snapshot for
the checkpoint is taken when rank 0 writes it, so it may include a few of the
next epoch's updates from faster trainers.
"""

from __future__ import annotations

import copy
import datetime
import inspect
import logging
import os
import threading
import uuid
import warnings
from typing import Any
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.distributed.rpc as rpc
from torch.futures import Future

from paratrain.errors import ConfigError
from paratrain.launch.store import EMULATED_LINK_VARIABLE, HOST_ADDRESS_VARIABLE, LOOPBACK, hosted_store
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext

log = logging.getLogger("paratrain")

SERVER_RANK = 0


class ParameterServer:
    """The parameters, their optimizer and the trainers' clocks.

    Thread-safe: RPC threads call it for remote trainers while rank 0's
    training thread calls it directly. Updates are applied one at a time
    under a lock; what is asynchronous is which parameters each gradient was
    computed from.

    Args:
        params: Initial parameters, flattened.
        workers: Number of trainers (ranks 0..workers-1).
        max_staleness: SSP bound S, or None for no bound.
        optimizer_state: A ``state_dict`` of the server's optimizer to resume from.

    Example:
        >>> server = ParameterServer(torch.zeros(3), workers=1, max_staleness=None)
        >>> recipe = (torch.optim.SGD, {"lr": 0.5})
        >>> server.push(0, torch.ones(3), {"lr": 0.5}, recipe).wait()
        tensor([-0.5000, -0.5000, -0.5000])
    """

    def __init__(self, params: torch.Tensor, workers: int, max_staleness: int | None,
                 optimizer_state: dict | None = None) -> None:
        self._flat = torch.nn.Parameter(params.detach().to(torch.float32).clone())
        self._max_staleness = max_staleness
        self._optimizer: torch.optim.Optimizer | None = None
        self._optimizer_state = optimizer_state
        self._lock = threading.Lock()
        self._clocks = [0] * workers
        self._finished: set[int] = set()
        self._waiting: dict[int, Future] = {}
        self._pulled_version = [0] * workers
        self.version = 0
        """Updates applied in this session."""
        self.max_clock_gap = 0
        """Most pushes a trainer was ahead of the slowest when it went on (at most S)."""
        self.max_staleness = 0
        """Most updates from others applied between a trainer's pull and its push."""

    def push(self, worker: int, grads: torch.Tensor, hyper: dict[str, Any],
             recipe: tuple[type, dict] | None) -> Future:
        """Apply one gradient; the Future gives the new parameters once ``worker`` may go on.

        ``hyper`` is the trainer's parameter group without its parameters (its
        scheduler's current lr, momentum...); ``recipe`` (optimizer class,
        constructor arguments) builds the server's optimizer on the first push.
        """
        reply: Future = Future()
        with self._lock:
            self._apply(worker, grads, hyper, recipe)
            self._waiting[worker] = reply
            released = self._release()
        _complete(released)
        return reply

    def pull(self, worker: int) -> torch.Tensor:
        """The current parameters (a copy)."""
        with self._lock:
            self._pulled_version[worker] = self.version
            return self._flat.detach().clone()

    def finish(self, worker: int) -> None:
        """``worker`` pushes no more: stop holding the others back for it."""
        with self._lock:
            self._finished.add(worker)
            released = self._release()
        _complete(released)

    def stats(self) -> dict[str, int]:
        """Updates applied, largest clock gap and largest staleness seen this session."""
        with self._lock:
            return {"updates": self.version, "max_clock_gap": self.max_clock_gap,
                    "max_staleness": self.max_staleness}

    def state_dict(self) -> dict[str, Any]:
        """Parameters and optimizer state, copied together under the lock (consistent pair)."""
        with self._lock:
            optimizer = self._optimizer.state_dict() if self._optimizer is not None else self._optimizer_state
            return {"params": self._flat.detach().clone(), "optimizer": copy.deepcopy(optimizer)}

    def _apply(self, worker: int, grads: torch.Tensor, hyper: dict[str, Any],
               recipe: tuple[type, dict] | None) -> None:
        if self._optimizer is None:
            self._optimizer = _build_optimizer(self._flat, recipe)
            if self._optimizer_state:
                self._optimizer.load_state_dict(self._optimizer_state)
        # The trainers step their schedulers; their current lr (and momentum,
        # for one-cycle) is what this update uses.
        self._optimizer.param_groups[0].update(hyper)
        self._flat.grad = grads.to(torch.float32).reshape(self._flat.shape)
        self._optimizer.step()
        self._flat.grad = None
        self.max_staleness = max(self.max_staleness, self.version - self._pulled_version[worker])
        self.version += 1
        self._clocks[worker] += 1

    def _release(self) -> list[tuple[Future, torch.Tensor]]:
        """Replies for every waiting trainer now within the bound (call under the lock)."""
        active = [clock for rank, clock in enumerate(self._clocks) if rank not in self._finished]
        slowest = min(active) if active else 0
        released = []
        for worker in list(self._waiting):
            gap = self._clocks[worker] - slowest
            if self._max_staleness is None or gap <= self._max_staleness:
                self.max_clock_gap = max(self.max_clock_gap, gap)
                self._pulled_version[worker] = self.version
                released.append((self._waiting.pop(worker), self._flat.detach().clone()))
        return released


def _complete(released: list[tuple[Future, torch.Tensor]]) -> None:
    # Outside the lock: completing a Future runs its callbacks (the RPC reply).
    for future, params in released:
        future.set_result(params)


def _build_optimizer(flat: torch.nn.Parameter, recipe: tuple[type, dict] | None) -> torch.optim.Optimizer:
    """The trainers' optimizer class over the server's flat vector (elementwise, so equivalent)."""
    if recipe is None:
        raise RuntimeError("the first push to the parameter server must say which optimizer to build")
    cls, defaults = recipe
    accepted = inspect.signature(cls).parameters
    return cls([flat], **{key: value for key, value in defaults.items() if key in accepted})


# The server of this process (rank 0 only, while a run is live). RPC calls
# module-level functions by reference, so they need a place to find it.
_SERVER: ParameterServer | None = None


def _serving() -> ParameterServer:
    if _SERVER is None:
        raise RuntimeError("no parameter server runs in this process")
    return _SERVER


@rpc.functions.async_execution
def _remote_push(worker: int, grads: torch.Tensor, hyper: dict, recipe: tuple | None) -> Future:
    return _serving().push(worker, grads, hyper, recipe)


def _remote_pull(worker: int) -> torch.Tensor:
    return _serving().pull(worker)


def _remote_finish(worker: int) -> None:
    _serving().finish(worker)


class AsyncParameterServerStrategy(ProcessGroupStrategy):
    """Trainers push gradients to a parameter server without waiting for each other."""

    name = "async"
    bench_specs = ("async",)
    supports_accumulation = True
    description = "asynchronous parameter server on rank 0 (bounded staleness with --max-staleness)"

    def __init__(self, argument: str | None = None, options=None) -> None:
        super().__init__(argument, options)
        self.max_staleness = options.max_staleness if options is not None else None
        self.timeout_s = options.timeout_s if options is not None else 300.0
        self._params: list[torch.nn.Parameter] = []
        self._numel = 0
        self._rank = 0
        self._world_size = 1
        self._server: ParameterServer | None = None
        self._rpc_store: dist.Store | None = None
        self._sent_recipe = False
        self._restored: dict | None = None

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        global _SERVER
        self._params = list(model.parameters())
        self._numel = sum(p.numel() for p in self._params)
        self._rank, self._world_size = ctx.rank, ctx.world_size
        if ctx.rank == SERVER_RANK:
            restored = self._restored or {}
            start = restored.get("params")
            if start is None:
                start = torch.cat([p.detach().reshape(-1).cpu() for p in self._params])
            # Set before RPC starts: no remote call can arrive before the server exists.
            self._server = _SERVER = ParameterServer(start, ctx.world_size, self.max_staleness,
                                                      restored.get("optimizer"))
        if ctx.world_size > 1:
            self._init_rpc(ctx)
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
        global _SERVER
        if self._rpc_store is not None:
            rpc.shutdown(graceful=True, timeout=self.timeout_s)
            self._rpc_store = None
        if self._server is not None:
            log.debug("async: final server stats %s", self._server.stats())
            if _SERVER is self._server:
                _SERVER = None

    # -- talking to the server ------------------------------------------------

    def _push(self, grads: torch.Tensor, hyper: dict, recipe: tuple | None) -> torch.Tensor:
        if self._server is not None:
            return _wait(self._server.push(self._rank, grads, hyper, recipe), self.timeout_s)
        future = rpc.rpc_async(SERVER_RANK, _remote_push, args=(self._rank, grads, hyper, recipe),
                               timeout=self.timeout_s)
        return future.wait()

    def _pull(self) -> torch.Tensor:
        if self._server is not None:
            return self._server.pull(self._rank)
        return rpc.rpc_sync(SERVER_RANK, _remote_pull, args=(self._rank,), timeout=self.timeout_s)

    def _finish(self) -> None:
        if self._server is not None:
            self._server.finish(self._rank)
        else:
            rpc.rpc_sync(SERVER_RANK, _remote_finish, args=(self._rank,), timeout=self.timeout_s)

    def _load(self, flat: torch.Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self._params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    def _init_rpc(self, ctx: WorkerContext) -> None:
        """Start RPC on a store hosted by rank 0, on a port the OS picked (no race for a port)."""
        timeout = datetime.timedelta(seconds=self.timeout_s)
        if ctx.rank == SERVER_RANK:
            master = os.environ.get("MASTER_ADDR", LOOPBACK)
            # The local launcher says where the other ranks reach this one (loopback, or this
            # rank's emulated host): listen there only. On loopback, likewise.
            own = os.environ.get(HOST_ADDRESS_VARIABLE) or (LOOPBACK if master == LOOPBACK else None)
            if own:
                store = hosted_store(own, ctx.world_size, self.timeout_s)
            else:
                # torchrun: this rank runs on MASTER_ADDR's machine; TCPStore listens on every address.
                store = dist.TCPStore(master, 0, ctx.world_size, is_master=True, wait_for_workers=False,
                                      timeout=timeout)
            address = [own or master, store.port]
        else:
            address = [None, None]
        dist.broadcast_object_list(address, src=SERVER_RANK)
        if ctx.rank != SERVER_RANK:
            store = dist.TCPStore(address[0], address[1], ctx.world_size, is_master=False, timeout=timeout)
        self._rpc_store = store
        network_only = {}
        if os.environ.get(EMULATED_LINK_VARIABLE):
            # TensorPipe finds that every "host" is this machine and would move tensors through
            # shared memory (its shm transport, cma channel), past the emulated link (measured:
            # 22 ms steps at 100mbit, where 4 MiB each way take 0.7 s). Sockets only, as between machines.
            network_only = {"_transports": ["uv"], "_channels": ["basic"]}
        options = rpc.TensorPipeRpcBackendOptions(init_method=_rendezvous_url(store, ctx),
                                                  rpc_timeout=self.timeout_s, **network_only)
        with warnings.catch_warnings():
            # torch's own RPC start-up calls an object collective in a way torch 2.x deprecates.
            warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
            rpc.init_rpc(f"trainer{ctx.rank}", rank=ctx.rank, world_size=ctx.world_size,
                         rpc_backend_options=options)


def _wait(future: Future, timeout_s: float) -> Any:
    """``future.wait()`` with a deadline: a trainer that never catches up must fail, not hang."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout_s):
        raise TimeoutError(f"the parameter server held this trainer back for more than timeout_s={timeout_s}; "
                           "is another worker stuck or dead?")
    return future.value()


# init_rpc takes a URL, not a store: a rendezvous handler of our own hands it
# the store we made, looked up by a one-time token in the URL.
_RENDEZVOUS_SCHEME = "paratrain-ps"
_rendezvous_stores: dict[str, tuple[dist.Store, int, int]] = {}
_handler_lock = threading.Lock()
_handler_registered = False


def _rendezvous_url(store: dist.Store, ctx: WorkerContext) -> str:
    global _handler_registered
    with _handler_lock:
        if not _handler_registered:
            dist.register_rendezvous_handler(_RENDEZVOUS_SCHEME, _store_rendezvous)
            _handler_registered = True
    token = uuid.uuid4().hex
    _rendezvous_stores[token] = (store, ctx.rank, ctx.world_size)
    return f"{_RENDEZVOUS_SCHEME}://{token}"


def _store_rendezvous(url: str, **kwargs):
    yield _rendezvous_stores.pop(urlparse(url).netloc)
