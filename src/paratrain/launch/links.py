"""Links between workers: loopback, or an emulated network of a given bandwidth.

``--link 100mbit`` runs each worker as its own "host" (a network namespace)
joined to the others by a link limited to that rate (launch.netns builds it).
Only the bandwidth is emulated: the kernel has no netem, so no latency is added.
The rates use tc's units: kbit, mbit, gbit (powers of 1000, bits per second).

Example:
    >>> parse_link("100mbit").bits_per_s
    100000000.0
    >>> parse_link("loopback").emulated
    False
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paratrain.errors import ConfigError

LOOPBACK = "loopback"
_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(kbit|mbit|gbit)$")


@dataclass(frozen=True)
class Link:
    """A link between every pair of workers: loopback (no limit) or a rate in bits per second."""

    name: str
    """As the user wrote it, normalised: 'loopback', '100mbit', '1gbit'."""
    bits_per_s: float | None = None
    """The emulated bandwidth; None on loopback."""

    @property
    def emulated(self) -> bool:
        """True when workers run in network namespaces joined by a rate-limited link."""
        return self.bits_per_s is not None

    @property
    def bytes_per_s(self) -> float | None:
        return None if self.bits_per_s is None else self.bits_per_s / 8


def parse_link(text: object, field: str = "link") -> Link:
    """'loopback', or a positive rate such as '100mbit', '1gbit', '2.5gbit'; else a ConfigError naming ``field``."""
    if not isinstance(text, str):
        raise ConfigError(f"{field}={text!r} must be 'loopback' or a rate such as 100mbit or 1gbit")
    value = text.strip().lower()
    if value in (LOOPBACK, "lo", "local"):
        return Link(LOOPBACK)
    match = _RATE.match(value)
    if not match:
        raise ConfigError(f"{field}={text!r} must be 'loopback' or a rate such as 100mbit or 1gbit "
                          f"(units: {', '.join(_UNITS)})")
    rate = float(match.group(1)) * _UNITS[match.group(2)]
    if rate <= 0:
        raise ConfigError(f"{field}={text!r} must be a rate > 0, such as 100mbit or 1gbit")
    if rate < 1e5:
        # Below 100 kbit/s a single 4 MiB all-reduce takes minutes: a typo, not a network.
        raise ConfigError(f"{field}={text!r} is below 100kbit; use a rate such as 100mbit or 1gbit")
    return Link(value, rate)


def parse_links(text: str, field: str = "link") -> list[Link]:
    """A comma-separated list of links, in order, without repeats."""
    links: list[Link] = []
    for part in str(text).split(","):
        if part.strip():
            link = parse_link(part.strip(), field)
            if link not in links:
                links.append(link)
    if not links:
        raise ConfigError(f"{field}={text!r} names no link; use e.g. loopback,1gbit,100mbit")
    return links
