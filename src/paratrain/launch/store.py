"""The rendezvous store of a job started on this machine, on loopback only.

Its own module, below the strategies and the launchers that all use it (the parameter
server hosts its RPC store with it too).
"""

from __future__ import annotations

import datetime
import socket

import torch.distributed as dist


def loopback_store(world_size: int, timeout_s: float) -> "dist.TCPStore":
    """A rendezvous store hosted here, listening on 127.0.0.1 only, on a port the OS picks.

    TCPStore binds its server to every address whatever host it is given; one
    given a socket already bound to loopback uses that instead (and closes it).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(max(128, world_size))
    except BaseException:
        listener.close()
        raise
    return dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=listener.detach())
