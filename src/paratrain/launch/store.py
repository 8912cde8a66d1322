"""The rendezvous store of a job started on this machine, listening on one address only.

Its own module, below the strategies and the launchers that all use it (the parameter
server hosts its RPC store with it too).
"""

from __future__ import annotations

import datetime
import socket

import torch.distributed as dist

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


def hosted_store(host: str, world_size: int, timeout_s: float) -> "dist.TCPStore":
    """A rendezvous store hosted here, listening on ``host`` (an IPv4 address) only, on a port the OS picks.

    TCPStore binds its server to every address whatever host it is given; one
    given a socket already bound to ``host`` uses that instead (and closes it).
    An emulated host's store listens on the address its peers reach it at.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((host, 0))
        listener.listen(max(128, world_size))
    except BaseException:
        listener.close()
        raise
    return dist.TCPStore(host, 0, world_size, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=listener.detach())
