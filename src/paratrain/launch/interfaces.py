"""This machine's network interfaces and addresses, as a node of a multi-machine job sees them.

Asked of the kernel directly (a routing decision through a UDP socket, an interface's
address through ``SIOCGIFADDR``), not of iproute2: container images of schedulers
(Kubernetes, Slurm with containers) often have no ``ip`` command. IPv4 only, as gloo
is set up here. Linux only (the ioctl's number is Linux's): elsewhere an interface shows no address.
"""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFADDR = 0x8915
"""ioctl: an interface's (first) IPv4 address."""
_IFNAMSIZ = 16


def interface_names() -> list[str]:
    """The network interfaces of this machine (of this network namespace), in index order."""
    try:
        return [name for _, name in socket.if_nameindex()]
    except OSError:
        return []


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address of interface ``name``; None when it has none or does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", name.encode()[: _IFNAMSIZ - 1])
        try:
            reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError:  # EADDRNOTAVAIL: no IPv4 address; ENODEV: no such interface
            return None
    # struct ifreq: 16 bytes of name, then a sockaddr_in (family 2, port 2, address 4).
    return socket.inet_ntoa(reply[20:24])


def interface_with_address(address: str) -> str | None:
    """The interface that holds ``address`` as its IPv4 address, or None."""
    for name in interface_names():
        if interface_ipv4(name) == address:
            return name
    return None


def resolve_ipv4(host: str) -> str | None:
    """``host`` (a name or an IPv4 address) as an IPv4 address; None when it does not resolve."""
    try:
        found = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    return str(found[0][4][0]) if found else None


def source_address_towards(address: str) -> str | None:
    """The address this machine sends from to reach ``address`` (the kernel's routing choice,
    as ``ip route get`` shows it); None when no route leads there.

    Connecting a UDP socket sends nothing: it only makes the kernel pick the route and the
    source address. Towards one of this machine's own addresses, that address itself.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))  # any port: nothing is sent
        except OSError:
            return None
        return str(probe.getsockname()[0])
