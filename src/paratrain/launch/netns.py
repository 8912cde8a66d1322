"""Emulated hosts on this machine: one network namespace per rank, joined by rate-limited links.

Each rank gets a namespace ``paratrain-PID-RANK`` with one end of a veth pair
(``ptnPIDnRANK``, address 10.213.K.(RANK+2)); the other end (``ptnPIDhRANK``)
is a port of a bridge ``ptnPIDb`` in this (the root) namespace, which holds
10.213.K.1: the address of the launcher's rendezvous store. Both ends of every
veth carry a ``tbf`` qdisc at the link's rate, since a qdisc shapes only what
leaves an interface: a rank sends at most the rate (its own end) and receives
at most the rate (the bridge's end), like a host whose full-duplex NIC is
plugged into a switch.

Only bandwidth is emulated. The kernels this runs on have no ``netem``: no
added latency, jitter or loss. The round trip stays that of veth (tens of
microseconds), so latency-bound traffic looks better here than on a real network.

Everything is named after the pid of the launcher that built it, and removed
when the ``with`` block ends: normally, on an exception, on SIGINT/SIGTERM, and
when the build fails halfway. What a launcher killed outright (SIGKILL) leaves
is removed by the next build (:func:`remove_stale`), as launch.scratch does
for scratch folders. Needs root and iproute2 (``ip``, ``tc``):
:func:`check_can_emulate` says what is missing.

Example:
    >>> from paratrain.launch.links import parse_link
    >>> with emulated_hosts(parse_link("100mbit"), workers=2) as net:  # doctest: +SKIP
    ...     net.hosts[1].address, net.store_host
    ('10.213.7.3', '10.213.7.1')
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from paratrain.errors import ConfigError
from paratrain.launch.links import Link
from paratrain.launch.scratch import owner_is_gone
from paratrain.train import interrupts

NAMESPACE_PREFIX = "paratrain-"
"""Namespaces are ``paratrain-PID-RANK``; the probe of :func:`check_can_emulate` is ``paratrain-PID-probe``."""
LINK_PREFIX = "ptn"
"""Bridges ``ptnPIDb``, veth ends ``ptnPIDhRANK`` (bridge side) and ``ptnPIDnRANK`` (namespace side)."""
SUBNET_PREFIX = "10.213"
"""Subnets 10.213.K.0/24: one K per running build, the first free one."""
MAX_WORKERS = 253
"""Addresses .2 to .254 of one /24."""
# Interface names are at most 15 bytes (IFNAMSIZ - 1): 'ptn' + 7-digit pid + 'h' + 4 digits fits.
_MAX_IFNAME = 15
_NAMESPACE = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)-(\d+|probe)$")
_LINK = re.compile(rf"^{LINK_PREFIX}(\d+)(b|[hn]\d+)$")
# Concurrent launchers pick their subnets one at a time (the bridge's address claims one).
_LOCK_FILE = Path("/run/lock/paratrain-netns.lock")
# A queue that holds at most this long at the rate; more waits in the sender's socket buffer.
_TBF_LATENCY = "50ms"
_BUILD_TIMEOUT_S = 60.0
_active = threading.Lock()  # one set of emulated hosts per process: the names carry only the pid


@dataclass(frozen=True)
class Host:
    """One emulated host: a rank's namespace, its interface and address there."""

    rank: int
    namespace: str
    """Network namespace name, for ``ip netns exec``."""
    interface: str
    """The veth end inside the namespace: what gloo and TensorPipe must bind (GLOO_SOCKET_IFNAME)."""
    address: str
    """The rank's IPv4 address on that interface."""

    def exec_prefix(self) -> list[str]:
        """The command prefix that runs a program in this host's namespace (environment and fds kept)."""
        return [_command("ip"), "netns", "exec", self.namespace]


@dataclass(frozen=True)
class EmulatedHosts:
    """What :func:`emulated_hosts` built."""

    link: Link
    hosts: tuple[Host, ...]
    store_host: str
    """The bridge's address in the launcher's namespace, reachable from every host: host the store here."""
    bridge: str
    subnet: str


def check_can_emulate(link: Link, probe: bool = True) -> None:
    """Raise ConfigError naming what an emulated ``link`` needs and this machine lacks.

    Root (network namespaces), the commands ``ip`` and ``tc`` (iproute2) and, with
    ``probe``, the kernel's ``tbf`` qdisc, tried in a throw-away namespace (~30 ms).
    No latency is checked: it cannot be emulated here (no netem).
    """
    flag = f"--link {link.name}"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ConfigError(f"{flag} needs root (network namespaces); run as root or use --link loopback")
    missing = [name for name in ("ip", "tc") if _find(name) is None]
    if missing:
        raise ConfigError(f"{flag} needs the command{'s' if len(missing) > 1 else ''} {' and '.join(missing)}, "
                          "not found: install iproute2 (apt-get install iproute2) or use --link loopback")
    if probe:
        _probe_tbf(flag)


def _probe_tbf(flag: str) -> None:
    namespace = f"{NAMESPACE_PREFIX}{os.getpid()}-probe"
    added = subprocess.run([_command("ip"), "netns", "add", namespace], capture_output=True, text=True)
    if added.returncode != 0:
        raise ConfigError(f"{flag} needs network namespaces, but 'ip netns add' failed: "
                          f"{_one_line(added.stderr)}; use --link loopback")
    try:
        shaped = subprocess.run([_command("tc"), "-n", namespace, "qdisc", "add", "dev", "lo", "root", "tbf",
                                 "rate", "100mbit", "burst", "64kb", "latency", _TBF_LATENCY],
                                capture_output=True, text=True)
        if shaped.returncode != 0:
            raise ConfigError(f"{flag} needs the kernel's tbf qdisc (sch_tbf), but tc failed: "
                              f"{_one_line(shaped.stderr)}; use --link loopback")
    finally:
        subprocess.run([_command("ip"), "netns", "delete", namespace], capture_output=True)


@contextlib.contextmanager
def emulated_hosts(link: Link, workers: int) -> Iterator[EmulatedHosts]:
    """Build ``workers`` emulated hosts joined by ``link``; remove them all when the block ends.

    SIGINT and SIGTERM (when no other handler is installed) raise ``Interrupted`` inside
    the block, so the removal runs; a second signal does not break it off.
    """
    if not link.emulated:
        raise ConfigError(f"link={link.name!r} is not emulated: emulated hosts need a rate such as 100mbit")
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"workers={workers} must be between 1 and {MAX_WORKERS} for an emulated link "
                          f"(one /24 subnet), but got {workers}")
    check_can_emulate(link, probe=False)
    if not _active.acquire(blocking=False):
        raise RuntimeError("emulated hosts are already built in this process: one set at a time")
    try:
        with interrupts.handled():
            pid = os.getpid()
            try:
                yield _build(link, workers, pid)
            finally:
                # Held back: a second Ctrl-C must not leave namespaces or links behind.
                with interrupts.deferred():
                    remove_own(pid)
    finally:
        _active.release()


def _build(link: Link, workers: int, pid: int) -> EmulatedHosts:
    bridge = f"{LINK_PREFIX}{pid}b"
    if len(f"{LINK_PREFIX}{pid}h{workers - 1}") > _MAX_IFNAME:
        raise ConfigError(f"workers={workers} is too many for interface names with pid {pid}; use fewer")
    rate = _tc_rate(link)
    burst = _burst_bytes(link)
    with _subnet_lock():
        remove_stale()
        remove_own(pid)  # a dead launcher's, whose pid this process now has
        third = _free_subnet()
        subnet = f"{SUBNET_PREFIX}.{third}"
        # The bridge's address claims the subnet before the lock is let go.
        _run_batch([
            f"link add {bridge} type bridge",
            f"addr add {subnet}.1/24 dev {bridge}",
            f"link set {bridge} up",
        ])
    hosts = []
    outer_ip: list[str] = []
    outer_tc: list[str] = []
    shape = f"root tbf rate {rate} burst {burst} latency {_TBF_LATENCY}"
    for rank in range(workers):
        namespace = f"{NAMESPACE_PREFIX}{pid}-{rank}"
        outer, inner = f"{LINK_PREFIX}{pid}h{rank}", f"{LINK_PREFIX}{pid}n{rank}"
        outer_ip += [
            f"netns add {namespace}",
            f"link add {outer} type veth peer name {inner} netns {namespace}",
            f"link set {outer} master {bridge} up",
        ]
        outer_tc.append(f"qdisc add dev {outer} {shape}")
        hosts.append(Host(rank, namespace, inner, f"{subnet}.{rank + 2}"))
    _run_batch(outer_ip)
    for host in hosts:
        _run_batch([
            f"addr add {host.address}/24 dev {host.interface}",
            f"link set {host.interface} up",
            # Sockets a rank opens to itself (gloo connects to its own address too) need lo.
            "link set lo up",
        ], namespace=host.namespace)
    try:
        _run_batch(outer_tc, tool="tc")
        for host in hosts:
            _run_batch([f"qdisc add dev {host.interface} {shape}"], tool="tc", namespace=host.namespace)
    except ConfigError as exc:
        raise ConfigError(f"--link {link.name} needs the kernel's tbf qdisc (sch_tbf): {exc}") from None
    return EmulatedHosts(link, tuple(hosts), f"{subnet}.1", bridge, f"{subnet}.0/24")


def _tc_rate(link: Link) -> str:
    """tc's rate in bits per second, whole (tc reads '100mbit' and '100000000bit' alike)."""
    return f"{int(round(link.bits_per_s))}bit"


def _burst_bytes(link: Link) -> int:
    """Bucket size: 64 KiB (measured: 96 Mbit/s at 100mbit, 955 at 1gbit), more on faster links
    so that one timer tick (1 ms) of traffic fits and tbf does not fall below its rate."""
    return max(64 * 1024, int(link.bits_per_s / 8 / 1000))


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    _LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _free_subnet() -> int:
    """The first K whose 10.213.K.0/24 no interface of this namespace uses."""
    listing = subprocess.run([_command("ip"), "-4", "-o", "addr", "show"], capture_output=True, text=True,
                             check=True, timeout=_BUILD_TIMEOUT_S).stdout
    used = {int(m) for m in re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", listing)}
    for third in range(1, 255):
        if third not in used:
            return third
    raise RuntimeError(f"every subnet {SUBNET_PREFIX}.K.0/24 is in use: too many emulated networks at once")


def remove_own(pid: int) -> None:
    """Remove the namespaces, veths (their qdiscs go with them) and bridge named after ``pid``.

    Veths are deleted before their namespaces: deleting a namespace frees its
    interfaces only later, in the background, and the next build needs the names.
    """
    namespaces = [name for name in _namespaces() if _owner(name, _NAMESPACE) == pid]
    links = [name for name in _links() if _owner(name, _LINK) == pid]
    outer = [name for name in links if re.match(rf"^{LINK_PREFIX}{pid}h\d+$", name)]
    bridges = [name for name in links if name.endswith("b")]
    commands = [f"link delete {name}" for name in outer]
    commands += [f"netns delete {name}" for name in namespaces]
    commands += [f"link delete {name}" for name in bridges]
    if commands:
        _run_batch(commands, check=False)


def remove_stale() -> list[str]:
    """Remove the namespaces and links of launchers that are gone; return the names of those removed."""
    owners = {_owner(name, _NAMESPACE) for name in _namespaces()} | {_owner(name, _LINK) for name in _links()}
    removed: list[str] = []
    for pid in sorted(p for p in owners if p is not None and owner_is_gone(str(p))):
        removed += [name for name in _namespaces() + _links()
                    if _owner(name, _NAMESPACE) == pid or _owner(name, _LINK) == pid]
        remove_own(pid)
    return removed


def leftovers(pid: int | None = None) -> list[str]:
    """Namespaces, links and qdiscs of ours (of ``pid`` only, if given) that exist now."""
    found = [name for name in _namespaces() if _owner(name, _NAMESPACE) is not None]
    found += [name for name in _links() if _owner(name, _LINK) is not None]
    if pid is not None:
        found = [name for name in found if pid == (_owner(name, _NAMESPACE) or _owner(name, _LINK))]
    qdiscs = subprocess.run([_command("tc"), "qdisc", "show"], capture_output=True, text=True).stdout
    found += [f"tbf qdisc on {dev}" for dev in re.findall(r"^qdisc tbf \S+ dev (\S+)", qdiscs, re.MULTILINE)
              if _owner(dev, _LINK) is not None and (pid is None or _owner(dev, _LINK) == pid)]
    return found


def _owner(name: str, pattern: re.Pattern) -> int | None:
    match = pattern.match(name)
    return int(match.group(1)) if match else None


def _namespaces() -> list[str]:
    # 'ip netns list' prints 'NAME (id: N)' for namespaces with an id.
    listing = subprocess.run([_command("ip"), "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]


def _links() -> list[str]:
    listing = subprocess.run([_command("ip"), "-o", "link", "show"], capture_output=True, text=True).stdout
    # '7: ptn42h1@if2: <...' -> 'ptn42h1'
    return [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if ":" in line]


def _run_batch(commands: list[str], tool: str = "ip", check: bool = True, namespace: str | None = None) -> None:
    """Run ``ip``/``tc`` commands as one batch (one process, not one per command), in ``namespace``.

    ``check``: stop at the first failure and raise; else go on through every command (clean-up).
    """
    argv = [_command(tool)] + (["-n", namespace] if namespace else []) + ([] if check else ["-force"])
    proc = subprocess.run(argv + ["-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise ConfigError(f"emulated network: '{tool}' failed: {_one_line(proc.stderr) or proc.returncode}")


def _find(name: str) -> str | None:
    # Root's PATH has the sbin folders; a login shell's sometimes not.
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _command(name: str) -> str:
    return _find(name) or name


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
