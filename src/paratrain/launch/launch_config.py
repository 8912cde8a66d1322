"""What `paratrain launch` is asked to start: one node's share of a multi-node job.

The same config drives the three ways out: starting torchrun's agent on this node
(launch/torchrun_launch.py), writing an sbatch script (launch/slurm.py) and writing a
Kubeflow PyTorchJob manifest (launch/k8s.py).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from paratrain.errors import ConfigError

_NNODES = re.compile(r"^(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class LaunchConfig:
    """One multi-node job as `paratrain launch` starts or describes it.

    Example:
        >>> cfg = LaunchConfig(nnodes="1:2", node_rank=0, master="10.0.0.1:29400", command=("fit", "--demo"))
        >>> cfg.min_nodes, cfg.max_nodes, cfg.master_host, cfg.master_port
        (1, 2, '10.0.0.1', 29400)
    """

    nnodes: str
    """Nodes in the job: "N", or "MIN:MAX" for an elastic job that goes on with fewer (torchrun's --nnodes)."""
    node_rank: int | None
    """This node's rank (0 hosts the rendezvous); None where a scheduler decides it (Slurm, Kubernetes)."""
    master: str
    """HOST:PORT of the rendezvous on node 0 (torchrun's --rdzv-endpoint)."""
    command: tuple[str, ...]
    """The paratrain subcommand every worker runs, with its arguments: ("fit", "--data", ...)."""
    nproc_per_node: int = 1
    """Worker processes on each node."""
    interface: str | None = None
    """Network interface the workers and the store bind (GLOO_SOCKET_IFNAME); None: the one that routes to the master."""
    max_restarts: int = 0
    """Times the group is restarted from the last checkpoint after a worker fails."""
    run_id: str = "paratrain"
    """The job's id in the rendezvous: every node of one job gives the same."""
    rdzv_timeout_s: float = 300.0
    """Seconds the rendezvous waits for the nodes (and, elastic, for a node that is gone)."""

    def __post_init__(self) -> None:
        match = _NNODES.match(str(self.nnodes))
        if not match:
            raise ConfigError(f"nnodes={self.nnodes!r} must be N or MIN:MAX (e.g. 2 or 1:2)")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 1 <= low <= high:
            raise ConfigError(f"nnodes={self.nnodes!r} must satisfy 1 <= MIN <= MAX")
        if self.node_rank is not None and not 0 <= self.node_rank < high:
            raise ConfigError(f"node_rank={self.node_rank} must be in 0..{high - 1} for nnodes={self.nnodes}")
        host, _, port = self.master.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"master={self.master!r} must be HOST:PORT (e.g. 10.0.0.1:29400)")
        if self.nproc_per_node < 1:
            raise ConfigError(f"nproc_per_node={self.nproc_per_node} must be >= 1")
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts={self.max_restarts} must be >= 0")
        if self.rdzv_timeout_s <= 0:
            raise ConfigError(f"rdzv_timeout_s={self.rdzv_timeout_s} must be > 0")
        if not self.command:
            raise ConfigError("launch needs the paratrain command the workers run, after --: "
                              "paratrain launch ... -- fit --data d.csv --target y --strategy ddp")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.run_id):
            raise ConfigError(f"run_id={self.run_id!r} may hold only letters, digits, '.', '_' and '-'")

    @property
    def min_nodes(self) -> int:
        return int(_NNODES.match(str(self.nnodes)).group(1))

    @property
    def max_nodes(self) -> int:
        match = _NNODES.match(str(self.nnodes))
        return int(match.group(2) or match.group(1))

    @property
    def master_host(self) -> str:
        return self.master.rpartition(":")[0]

    @property
    def master_port(self) -> int:
        return int(self.master.rpartition(":")[2])


def rdzv_conf(is_host: str, timeout_s: float, read_timeout: bool = False) -> str:
    """torchrun's --rdzv-conf: who hosts the c10d store, and how long the rendezvous waits for the nodes
    (whole seconds: the c10d rendezvous reads its timeouts as integers). ``read_timeout`` also bounds the
    agent's store client by it, which waits for a node 0 started later.

    Example:
        >>> rdzv_conf("false", 90.5, read_timeout=True)
        'is_host=false,join_timeout=91,read_timeout=91'
    """
    seconds = max(1, math.ceil(timeout_s))
    return f"is_host={is_host},join_timeout={seconds}" + (f",read_timeout={seconds}" if read_timeout else "")


def torchrun_args(config: LaunchConfig, endpoint: str, rdzv_id: str, is_host: str, read_timeout: bool = False,
                  local_addr: str | None = None) -> list[str]:
    """torchrun's arguments for ``config``'s job, the rendezvous at ``endpoint`` (after ``python -m
    torch.distributed.run``); the scheduler-specific parts (endpoint, id, who hosts) are given.

    No --node-rank: the c10d rendezvous numbers the nodes itself (torchrun ignores it, with a warning,
    for any backend but static); node rank 0 only says which node hosts the store.
    """
    argv = ["--nnodes", str(config.nnodes), "--nproc-per-node", str(config.nproc_per_node),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id,
            "--rdzv-conf", rdzv_conf(is_host, config.rdzv_timeout_s, read_timeout),
            "--max-restarts", str(config.max_restarts)]
    if local_addr is not None:
        argv += ["--local-addr", local_addr]
    return [*argv, "-m", "paratrain", *config.command]


def threads_per_worker(cpus: int, nproc_per_node: int) -> int:
    """OpenMP threads per worker: the node's cores split between its workers (oversubscribing thrashes)."""
    return max(1, cpus // nproc_per_node)
