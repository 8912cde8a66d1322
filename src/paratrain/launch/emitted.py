"""What `paratrain launch --emit` shares between its schedulers: the resources asked for
per node, their checks, and writing the result where the user asked.

Both emitters (launch/slurm.py, launch/k8s.py) describe one node the same way: how many
cores, how much memory, how many GPUs, for how long.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from paratrain.errors import ConfigError

SCHEDULED_MASTER_HOST = "$MASTER"
"""The --master host that means "the scheduler decides": Slurm's first node, Kubernetes' master pod."""

DEFAULT_RDZV_PORT = 29400
"""torchrun's own default rendezvous port."""

_MEMORY = re.compile(r"^(\d+)([KMGT]?)$")
_TIME_LIMIT = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


@dataclass(frozen=True)
class NodeResources:
    """What every node of the job asks the scheduler for.

    Example:
        >>> NodeResources(cpus=4, memory="16G", gpus=1, time_limit="1-00:00:00").time_limit_seconds
        86400
    """

    cpus: int
    """CPU cores for the node's torchrun agent and its workers."""
    memory: str | None = None
    """Memory per node as Slurm writes it: a number and K, M, G or T (binary units), e.g. 16G; None: the default."""
    gpus: int = 0
    """GPUs per node (0: none asked for)."""
    time_limit: str | None = None
    """Wall-clock limit, HH:MM:SS or D-HH:MM:SS; None: the scheduler's default."""

    def __post_init__(self) -> None:
        if self.cpus < 1:
            raise ConfigError(f"--cpus-per-node {self.cpus} must be >= 1")
        if self.memory is not None and not _MEMORY.match(self.memory):
            raise ConfigError(f"--memory {self.memory!r} must be a number with an optional unit K, M, G or T "
                              "(e.g. 16G or 512M)")
        if self.gpus < 0:
            raise ConfigError(f"--gpus-per-node {self.gpus} must be >= 0")
        if self.time_limit is not None and not _TIME_LIMIT.match(self.time_limit):
            raise ConfigError(f"--time-limit {self.time_limit!r} must be HH:MM:SS or D-HH:MM:SS (e.g. 02:00:00)")

    @property
    def time_limit_seconds(self) -> int | None:
        """The time limit in seconds (Kubernetes' activeDeadlineSeconds)."""
        if self.time_limit is None:
            return None
        days, hours, minutes, seconds = _TIME_LIMIT.match(self.time_limit).groups()
        return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)

    @property
    def kubernetes_memory(self) -> str | None:
        """The memory as a Kubernetes quantity: Slurm's G is a gibibyte, Kubernetes writes it Gi."""
        if self.memory is None:
            return None
        number, unit = _MEMORY.match(self.memory).groups()
        return f"{number}{unit or 'M'}i"  # Slurm reads a bare number as megabytes


def write_emitted(text: str, output: str | None, mode: int = 0o644) -> None:
    """Write TEXT to OUTPUT atomically (a reader never sees half a file), or to standard output.

    Args:
        text: the script or manifest.
        output: the file to write; None or "-": standard output.
        mode: the file's permissions (0o755 for a script).
    """
    if output in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"--output '{output}' is a directory; give a file name, e.g. {path / 'job.sh'}")
    if not path.parent.exists():
        raise ConfigError(f"--output '{output}': the folder '{path.parent}' does not exist")
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
