"""The parameter server behind `async`, and the RPC that reaches it (see strategies/async_ps.py).

Kept apart from the strategy class so that building or validating a config, which imports the
strategy registry, never imports torch.distributed.rpc: the strategy imports this module only
when a run starts (``wrap_model``).
"""

from __future__ import annotations

import copy
import datetime
import inspect
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

from paratrain.launch.store import EMULATED_LINK_VARIABLE, HOST_ADDRESS_VARIABLE, LOOPBACK, hosted_store
from paratrain.strategies.base import WorkerContext

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


def serve(server: ParameterServer) -> None:
    """Make ``server`` the one this process's RPC handlers reach (set before RPC starts, so that no
    remote call can arrive before the server exists)."""
    global _SERVER
    _SERVER = server


def stop_serving(server: ParameterServer) -> None:
    """Forget ``server`` if it is the one being served."""
    global _SERVER
    if _SERVER is server:
        _SERVER = None


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


def push_remote(rank: int, grads: torch.Tensor, hyper: dict, recipe: tuple | None, timeout_s: float) -> torch.Tensor:
    """Push a gradient to the server on rank 0; returns the parameters once this trainer may go on."""
    return rpc.rpc_async(SERVER_RANK, _remote_push, args=(rank, grads, hyper, recipe), timeout=timeout_s).wait()


def pull_remote(rank: int, timeout_s: float) -> torch.Tensor:
    """The server's current parameters."""
    return rpc.rpc_sync(SERVER_RANK, _remote_pull, args=(rank,), timeout=timeout_s)


def finish_remote(rank: int, timeout_s: float) -> None:
    """Tell the server this trainer pushes no more."""
    rpc.rpc_sync(SERVER_RANK, _remote_finish, args=(rank,), timeout=timeout_s)


def shutdown_rpc(timeout_s: float) -> None:
    """Stop this process's RPC agent once every trainer is done."""
    rpc.shutdown(graceful=True, timeout=timeout_s)


def start_rpc(ctx: WorkerContext, timeout_s: float) -> dist.Store:
    """Start RPC on a store hosted by rank 0, on a port the OS picked (no race for a port); returns
    the store, which must outlive RPC."""
    timeout = datetime.timedelta(seconds=timeout_s)
    if ctx.rank == SERVER_RANK:
        master = os.environ.get("MASTER_ADDR", LOOPBACK)
        # The local launcher says where the other ranks reach this one (loopback, or this
        # rank's emulated host): listen there only. On loopback, likewise.
        own = os.environ.get(HOST_ADDRESS_VARIABLE) or (LOOPBACK if master == LOOPBACK else None)
        if own:
            store = hosted_store(own, ctx.world_size, timeout_s)
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
    network_only = {}
    if os.environ.get(EMULATED_LINK_VARIABLE):
        # TensorPipe finds that every "host" is this machine and would move tensors through
        # shared memory (its shm transport, cma channel), past the emulated link (measured:
        # 22 ms steps at 100mbit, where 4 MiB each way take 0.7 s). Sockets only, as between machines.
        network_only = {"_transports": ["uv"], "_channels": ["basic"]}
    options = rpc.TensorPipeRpcBackendOptions(init_method=_rendezvous_url(store, ctx),
                                              rpc_timeout=timeout_s, **network_only)
    with warnings.catch_warnings():
        # torch's own RPC start-up calls an object collective in a way torch 2.x deprecates.
        warnings.filterwarnings("ignore", message="You are using a Backend", category=UserWarning)
        rpc.init_rpc(f"trainer{ctx.rank}", rank=ctx.rank, world_size=ctx.world_size,
                     rpc_backend_options=options)
    return store


def wait_for(future: Future, timeout_s: float) -> Any:
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
