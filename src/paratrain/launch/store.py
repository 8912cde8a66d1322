"""The rendezvous store of a job started on this machine, listening on one address only.

Its own module, below the strategies and the launchers that all use it (the parameter
server hosts its RPC store with it too).
"""

from __future__ import annotations

import datetime
import errno
import logging
import socket
from typing import TYPE_CHECKING

import torch.distributed as dist

if TYPE_CHECKING:
    from paratrain.launch.torchrun_env import TorchrunEnv

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
EMULATED_LINK_VARIABLE = "PARATRAIN_EMULATED_LINK"
"""Set by the local launcher for a worker on an emulated host: the link's name (e.g. 100mbit).
Whatever could pass data between the workers outside the network (shared memory) must not."""
HOST_ADDRESS_VARIABLE = "PARATRAIN_HOST_ADDR"
"""Set by the local launcher: a worker's own address, where its peers reach it (127.0.0.1, or
its emulated host's). A worker that hosts a store for its peers (the parameter server) listens there."""


def loopback_store(world_size: int, timeout_s: float) -> "dist.TCPStore":
    """A rendezvous store hosted here, listening on 127.0.0.1 only, on a port the OS picks."""
    return hosted_store(LOOPBACK, world_size, timeout_s)


def hosted_store(host: str, world_size: int | None, timeout_s: float, port: int = 0) -> "dist.TCPStore":
    """A rendezvous store hosted here, listening on ``host`` (an IPv4 address) only, on ``port``
    (0: one the OS picks).

    TCPStore binds its server to every address whatever host it is given; one
    given a socket already bound to ``host`` uses that instead (and closes it).
    An emulated host's store listens on the address its peers reach it at.
    ``world_size`` None: clients come and go (torchrun's agents).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if port:
            # A fixed port (a job's rendezvous) must be usable again at once after the last
            # job, whose closed connections linger in TIME_WAIT; TCPStore's own server does the same.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(max(128, world_size or 0))
    except BaseException:
        listener.close()
        raise
    return dist.TCPStore(host, listener.getsockname()[1], world_size, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=listener.detach())


def torchrun_worker_store(env: "TorchrunEnv", timeout_s: float) -> "dist.TCPStore | None":
    """The process-group store of workers that torchrun started, with rank 0's server bound to
    MASTER_ADDR only; None where torch's own env:// store is to be used.

    torchrun's agent (with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1, as `paratrain launch` sets it)
    picks MASTER_PORT and leaves the server to global rank 0, whose env:// TCPStore would
    listen on every address. Only an IPv4 address can be bound: given a host name (a bare
    torchrun without --local-addr) torch's store is used, and listens on every address; so it
    does where the agent shares its own store with the workers (they are its clients then).
    """
    if env.agent_hosts_store or not _is_ipv4(env.master_addr):
        return None
    timeout = datetime.timedelta(seconds=timeout_s)
    if not env.is_main:
        return dist.TCPStore(env.master_addr, env.master_port, env.world_size, is_master=False, timeout=timeout)
    try:
        return hosted_store(env.master_addr, env.world_size, timeout_s, port=env.master_port)
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL:
            raise
        # MASTER_ADDR is how the others reach this machine, not an address it holds (NAT):
        # only the wildcard address can take their connections.
        log.warning("MASTER_ADDR %s is not an address of this machine: the process group's store "
                    "listens on every address", env.master_addr)
        return None


def _is_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(part.isdigit() and int(part) < 256 for part in parts)
