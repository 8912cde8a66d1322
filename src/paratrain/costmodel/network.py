"""Where the workers run and how they are joined, and what one collective costs there.

Two settings: workers sharing this machine (loopback, or an emulated link
between network namespaces: compute is the calibration's for p concurrent
workers), or one worker per machine joined by a network of a given bandwidth
and latency (``advise --workers 64 --bandwidth 10gbit``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paratrain.costmodel.calibration import Calibration, CollectiveFit
from paratrain.costmodel.fitting import collective_time
from paratrain.errors import ConfigError
from paratrain.launch.links import LOOPBACK, Link, parse_link

DEFAULT_LATENCY_S = 50e-6
"""Latency of a data-centre network hop when none is given (a typical 10-25 Gbit/s Ethernet
round trip is 20-100 us; gloo over TCP adds its own, which loopback's alpha shows)."""
LOOPBACK_FALLBACK = CollectiveFit(alpha_s=1.5e-4, beta_s_per_byte=1 / 0.8e9)
"""gloo on loopback without a calibration: measured ~0.8 GB/s for 4 MiB all-reduces and
~0.1-0.3 ms per message on a 2-core machine."""
_TIME = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|ms|s)$")
_TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Network:
    """How p workers are placed and joined."""

    name: str
    """'loopback', '100mbit', '10gbit' (the link's rate as written)."""
    bytes_per_s: float | None = None
    """The link's rate; None on loopback (the calibration's)."""
    latency_s: float | None = None
    """One message's latency; None: the calibration's (loopback) or DEFAULT_LATENCY_S between machines."""
    shared_machine: bool = True
    """True: every worker on this machine, sharing its cores. False: one worker per machine."""
    cores_per_worker: int | None = None
    """Cores of each worker's machine when they are separate (None: as many as this machine's)."""

    def describe(self) -> str:
        if self.bytes_per_s is None:
            return "loopback on this machine"
        rate = rate_text(self.bytes_per_s * 8)
        return f"{rate} links on this machine" if self.shared_machine else f"{rate} between machines"


def rate_text(bits_per_s: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bits_per_s >= scale:
            return f"{bits_per_s / scale:g} {unit}"
    return f"{bits_per_s:g} bit/s"


def parse_latency(text: object, field: str = "latency") -> float:
    """'50us', '0.2ms', '1s' -> seconds; ConfigError naming the field, the rule and the value."""
    value = str(text).strip().lower()
    match = _TIME.match(value)
    if not match:
        raise ConfigError(f"{field}={text!r} must be a time such as 50us, 0.2ms or 1s (units: ns, us, ms, s)")
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_bandwidth(text: object, field: str = "bandwidth") -> float:
    """'10gbit' -> bits per second, with the rules of --link (a rate in kbit, mbit or gbit)."""
    link = parse_link(text, field)
    if not link.emulated:
        raise ConfigError(f"{field}={text!r} must be a rate such as 10gbit or 100mbit, not loopback")
    return float(link.bits_per_s)


def as_network(link: "Link | Network | str | float") -> Network:
    """A Link (workers on this machine), a Network, a link name, or bits per second (separate machines)."""
    if isinstance(link, Network):
        return link
    if isinstance(link, (int, float)):
        return Network(rate_text(float(link)), float(link) / 8, shared_machine=False)
    if isinstance(link, str):
        link = parse_link(link)
    return Network(link.name, link.bytes_per_s, shared_machine=True)


def collective_fit(calibration: Calibration | None, network: Network, collective: str) -> CollectiveFit:
    """alpha and beta of ``collective`` on ``network``: measured where the calibration has this link,
    else loopback's software costs plus the link's rate and latency."""
    measured = (calibration.collectives.get(network.name, {}) if calibration is not None else {})
    if collective in measured:
        return measured[collective]
    loop = (calibration.collectives.get(LOOPBACK, {}) if calibration is not None else {})
    base = loop.get(collective) or loop.get("all_reduce") or LOOPBACK_FALLBACK
    if network.bytes_per_s is None:
        return base
    wire = 1.0 / network.bytes_per_s
    if network.shared_machine:
        # Same machine, emulated link: gloo's copies still run on these cores, then the wire limits.
        return CollectiveFit(max(base.alpha_s, network.latency_s or 0.0), base.beta_s_per_byte + wire)
    # Separate machines: the wire's rate; the latency given, or a data-centre default (no loopback costs).
    latency = network.latency_s if network.latency_s is not None else DEFAULT_LATENCY_S
    return CollectiveFit(latency + base.alpha_s / 2, wire)


def comm_time(calibration: Calibration | None, network: Network, collective: str, workers: int,
              nbytes: float) -> float:
    """Seconds of one ``collective`` of ``nbytes`` per rank among ``workers``."""
    return collective_time(collective_fit(calibration, network, collective), collective, workers, nbytes)
