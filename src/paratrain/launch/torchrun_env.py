"""What torchrun (or any env:// launcher) tells a worker it started, read in one place.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT in
every worker, and its elastic agent adds TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT and
TORCHELASTIC_MAX_RESTARTS. Everything else in paratrain asks this module instead of reading
os.environ itself, so that what "started by torchrun" means is decided once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""Set by every env:// launcher; all of them present means this process is one of its workers."""


@dataclass(frozen=True)
class TorchrunEnv:
    """This worker's place in a job that torchrun started.

    Example:
        >>> env = TorchrunEnv.read({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
        ...                         "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
        >>> env.rank, env.world_size, env.spans_machines, env.restart_count
        (1, 4, True, 0)
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    """Workers on this machine (torchrun's --nproc-per-node)."""
    master_addr: str
    master_port: int
    run_id: str | None = None
    """The elastic agent's job id (TORCHELASTIC_RUN_ID); None for a launcher without an agent."""
    restart_count: int = 0
    """How many times the agent restarted the workers (TORCHELASTIC_RESTART_COUNT): > 0 means this
    process replaces one that failed, and the run directory it finds is its own run's."""
    max_restarts: int = 0
    agent_hosts_store: bool = False
    """The agent shares its rendezvous store with the workers (TORCHELASTIC_USE_AGENT_STORE): every
    rank is its client. Else global rank 0 hosts the process group's store at MASTER_ADDR:MASTER_PORT."""

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "TorchrunEnv | None":
        """The torchrun environment of this process (or of ``environ``); None when not started by torchrun."""
        env = os.environ if environ is None else environ
        if not all(name in env for name in TORCHRUN_VARIABLES):
            return None
        return cls(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env["LOCAL_RANK"]),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")),
            master_addr=env["MASTER_ADDR"],
            master_port=int(env["MASTER_PORT"]),
            run_id=env.get("TORCHELASTIC_RUN_ID"),
            restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
            max_restarts=int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")),
            agent_hosts_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
        )

    @property
    def is_main(self) -> bool:
        """Rank 0: the worker that writes the run directory."""
        return self.rank == 0

    @property
    def spans_machines(self) -> bool:
        """More workers in the job than on this machine."""
        return self.world_size != self.local_world_size

    @property
    def has_agent(self) -> bool:
        """Started by torchrun's elastic agent (which is this process's parent)."""
        return self.run_id is not None


def torchrun_env() -> TorchrunEnv | None:
    """This process's torchrun environment, or None."""
    return TorchrunEnv.read()


def under_torchrun() -> bool:
    """True when torchrun (or another env:// launcher) started this process."""
    return torchrun_env() is not None
