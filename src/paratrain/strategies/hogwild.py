"""`hogwild`: N processes on one machine update shared-memory parameters without locks (Hogwild!).

The workers are separate processes (started, not forked), so the parameters
are shared through a file-backed tensor: rank 0 writes its initial parameters
into a file in /dev/shm, every rank maps it with ``torch.from_file(shared=True)``
and points its model's parameters into it as views. Each worker then runs its
own optimizer on its own shard: reads and writes race, on purpose (Niu et al.,
2011: with sparse or small updates the races cost little and no one waits).

The file is created 0600 (the parameters are the user's data) and rank 0
unlinks it as soon as every rank has mapped it, or when setting up fails, so
nothing is left behind in /dev/shm even if a worker crashes; the memory lives
while mapped. Its name carries the local launcher's id, so that the launcher,
which outlives the workers, removes it too if a worker is killed in between.
At teardown every rank copies its parameters into private memory, so the model
rank 0 saves is the final shared state.

Limits: one machine only; CPU only; optimizer state (SGD momentum, Adam
moments) and buffers (BatchNorm statistics) stay private to each worker, so
every rank checkpoints its own (``replicas_differ``) and a resumed worker gets
its own back; a checkpoint taken while other workers already train the next
epoch is a snapshot of racing memory, as Hogwild is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid

import torch
import torch.distributed as dist

from paratrain.errors import ConfigError
from paratrain.launch.torchrun_env import torchrun_env
from paratrain.strategies.base import ProcessGroupStrategy, WorkerContext

SHM_PREFIX = "paratrain-hogwild-"
LAUNCH_ID_VARIABLE = "PARATRAIN_LAUNCH_ID"
"""Set by the local launcher in its workers: the id that names their shared-memory files."""


def shared_memory_dir() -> str:
    """/dev/shm where it exists (memory, not disk), else the temp directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _launch_id() -> str:
    """The local launcher's id, else this process's pid (torchrun, one process): a name-safe token."""
    token = os.environ.get(LAUNCH_ID_VARIABLE, "") or str(os.getpid())
    return "".join(c for c in token if c.isalnum() or c in "-_")


def remove_shared_memory(launch_id: str) -> None:
    """Remove the shared-memory files of the workers of launch ``launch_id`` (after they are gone)."""
    directory = shared_memory_dir()
    prefix = f"{SHM_PREFIX}{launch_id}-"
    for name in os.listdir(directory):
        if name.startswith(prefix):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(directory, name))


def _create_private(path: str, size_bytes: int) -> None:
    """Create the file 0600, whatever the umask: torch.from_file would make it readable by all."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size_bytes)
    finally:
        os.close(fd)


def check_one_machine() -> None:
    """Refuse a torchrun job that spans several machines: memory is shared on one only."""
    env = torchrun_env()
    if env is not None and env.spans_machines:
        raise ConfigError(
            f"strategy='hogwild' shares parameters through memory on one machine, but this job has "
            f"WORLD_SIZE={env.world_size} processes with LOCAL_WORLD_SIZE={env.local_world_size} per machine; "
            "run it on one machine, or use --strategy async or ddp across machines"
        )


class HogwildStrategy(ProcessGroupStrategy):
    """Lock-free updates of parameters shared in memory by the workers of one machine."""

    name = "hogwild"
    communicates = False  # the workers share one model in memory: nothing crosses a link
    runs_across_hosts = False  # the model lives in this machine's shared memory
    bench_specs = ("hogwild",)
    deterministic = False  # lock-free racing writes to shared memory
    description = "lock-free updates of shared-memory parameters by N processes on one machine (Hogwild!)"
    replicas_differ = True  # each worker's optimizer state is its own

    def __init__(self, argument: str | None = None, options=None) -> None:
        super().__init__(argument, options)
        check_one_machine()
        self._params: list[torch.nn.Parameter] = []
        self._shared: torch.Tensor | None = None
        self._path: str | None = None
        self._rank = 0

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        check_one_machine()
        if ctx.device.type != "cpu":
            raise ConfigError(f"strategy='hogwild' shares parameters in CPU memory, but device={ctx.device}; "
                              "use --device cpu")
        self._params = list(model.parameters())
        self._rank = ctx.rank
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise ConfigError(f"strategy='hogwild' needs parameters of one dtype, got {sorted(map(str, dtypes))}")
        numel = sum(p.numel() for p in self._params)
        dtype = dtypes.pop()
        name = [f"{SHM_PREFIX}{_launch_id()}-{uuid.uuid4().hex[:12]}.bin" if ctx.rank == 0 else None]
        dist.broadcast_object_list(name, src=0)
        self._path = os.path.join(shared_memory_dir(), name[0])
        try:
            if ctx.rank == 0:
                # Created here, sized to the parameters, and filled with rank 0's (or the checkpoint's) values.
                _create_private(self._path, numel * dtype.itemsize)
                self._shared = torch.from_file(self._path, shared=True, size=numel, dtype=dtype)
                self._shared.copy_(torch.cat([p.detach().reshape(-1) for p in self._params]))
            dist.barrier()  # the file exists and holds the initial parameters
            if ctx.rank != 0:
                self._shared = torch.from_file(self._path, shared=True, size=numel, dtype=dtype)
            dist.barrier()  # every rank has mapped it
        finally:
            # Also when a peer died or a signal came while setting up: the mapping alone keeps the memory.
            if ctx.rank == 0:
                self._remove_file()
        offset = 0
        with torch.no_grad():
            for p in self._params:
                # Same Parameter objects (the optimizer keeps them), new storage: views into shared memory.
                p.data = self._shared[offset : offset + p.numel()].view_as(p)
                offset += p.numel()
        return model

    def communication_stats(self) -> None:
        # Nothing crosses a wire: workers read and write one memory. (Reporting
        # CommStats(0, dense) would give an infinite "compression ratio".)
        return None

    def teardown(self) -> None:
        # After the loop's barrier no one writes: take the final shared values
        # into private memory, so the model outlives the mapping.
        with torch.no_grad():
            for p in self._params:
                p.data = p.data.clone()
        self._shared = None
        if self._rank == 0:
            self._remove_file()

    def _remove_file(self) -> None:
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
