"""Is the network between the workers what the cost model was told? (`paratrain netcheck`)

advise predicts from a calibration (`paratrain calibrate`, which times collectives on this
machine or on an emulated link) or from the --bandwidth and --latency it is given. On real
machines neither is proof: a job's nodes may sit behind a slower switch, share a link, or
talk over another interface than expected. netcheck times all-reduce and send/recv between the
workers actually started (locally, or one process per machine under torchrun / `paratrain
launch`) with the calibration's own job and fit, and sets the result beside what was assumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from paratrain.costmodel.calibration import CollectiveFit
from paratrain.costmodel.fitting import collective_time, fit_alpha_beta

SIZES = tuple(1024 * 4 ** i for i in range(9))
"""1 KiB .. 64 MiB, as calibrate times them: small ones give the latency, large ones the rate."""
BUCKET_BYTES = 4 * 2**20
"""The message the comparison quotes: about one DDP bucket (its default is 25 MiB, our MLPs' gradients
fill one or two buckets of a few MiB)."""
AGREES = 0.25
"""Measured and assumed times of a bucket-sized all-reduce within 25% agree: the cost model's own
median error is 5-12% (README), and a network's rate varies by that much under other traffic."""


@dataclass(frozen=True)
class NetworkCheck:
    """What netcheck measured among ``workers`` processes."""

    workers: int
    where: str
    """How the workers were placed: 'loopback', 'emulated 100mbit', '2 machines (torchrun)'."""
    all_reduce: CollectiveFit
    p2p: CollectiveFit | None
    seconds: float

    @property
    def bandwidth_bits_per_s(self) -> float | None:
        """The rate all-reduce's bytes moved at through the slowest link (1/beta); None if unmeasured."""
        beta = self.all_reduce.beta_s_per_byte
        return 8.0 / beta if beta > 0 else None

    def bucket_seconds(self) -> float:
        """Measured time of a BUCKET_BYTES all-reduce (fit_check makes sure it was timed)."""
        return next(t for p, n, t in self.all_reduce.points if n == BUCKET_BYTES)

    def to_dict(self) -> dict[str, Any]:
        return {"workers": self.workers, "where": self.where, "seconds": self.seconds,
                "bandwidth_bits_per_s": self.bandwidth_bits_per_s,
                "all_reduce": self.all_reduce.to_dict(), "p2p": self.p2p.to_dict() if self.p2p else None,
                "bucket_bytes": BUCKET_BYTES, "bucket_all_reduce_s": self.bucket_seconds()}


def fit_check(result: dict[str, Any], where: str, seconds: float) -> NetworkCheck:
    """A NetworkCheck from the calibration job's result (rank 0's)."""
    from paratrain.errors import WorkerError

    points = result.get("collectives", {})
    sizes = [n for _, n, _ in points.get("all_reduce", [])]
    if BUCKET_BYTES not in sizes:
        largest = f"{max(sizes) / 1024:.0f} KiB" if sizes else "nothing"
        raise WorkerError(f"netcheck timed all-reduces up to {largest} in {seconds:.0f} s, not the 4 MiB it "
                          f"compares: the network is slow or the machine busy; give it more --seconds")
    p2p = fit_alpha_beta("p2p", points["p2p"]) if points.get("p2p") else None
    return NetworkCheck(int(result["workers"]), where, fit_alpha_beta("all_reduce", points["all_reduce"]), p2p,
                        seconds)


def measure_network(workers: int, seconds: float, link=None) -> "NetworkCheck | None":
    """Time the collectives among ``workers`` processes: this process's torchrun group when torchrun
    started it (every rank must call this; rank 0 gets the check, the others None), else ``workers``
    local processes (on emulated hosts when ``link`` is an emulated Link)."""
    from paratrain.costmodel.job import CalibrationJob
    from paratrain.launch.env import default_threads
    from paratrain.launch.torchrun_env import torchrun_env

    started = time.monotonic()
    env = torchrun_env()
    local = env.local_world_size if env is not None else workers
    # The budget counts from the moment the group is up; the job stops before a size that would not fit.
    job = CalibrationJob(threads=default_threads(local), deadline=time.time() + seconds, sizes=SIZES,
                         repeats=3, measure_s=seconds)
    if env is not None:
        result = job.run(env.rank, env.world_size, env.local_rank, None)
        if result is None:
            return None
        machines = env.world_size // max(1, env.local_world_size)
        where = f"{machines} machine{'s' if machines != 1 else ''} x {env.local_world_size} (torchrun)"
    else:
        from paratrain.launch.local import launch_local

        kwargs = {"link": link} if link is not None and link.emulated else {}
        result = launch_local(job, workers, **kwargs)
        where = f"emulated {link.name}" if kwargs else "loopback on this machine"
    return fit_check(result, where, time.monotonic() - started)


def compare(check: NetworkCheck, expected: CollectiveFit, source: str) -> list[str]:
    """Lines setting the measurement beside what ``source`` assumed; the last says whether they agree."""
    measured_t = check.bucket_seconds()
    predicted_t = collective_time(expected, "all_reduce", check.workers, BUCKET_BYTES)
    lines = [f"assumed by {source}: latency {expected.alpha_s * 1e6:.0f} us, "
             f"bandwidth {_rate(expected.beta_s_per_byte)}"]
    off = measured_t / predicted_t - 1 if predicted_t > 0 else float("inf")
    lines.append(f"4 MiB all-reduce among {check.workers}: measured {measured_t * 1e3:.1f} ms, "
                 f"{source} predicts {predicted_t * 1e3:.1f} ms ({off:+.0%})")
    if abs(off) <= AGREES:
        lines.append(f"agrees: within {AGREES:.0%}; advise's predictions for this network hold")
    else:
        ratio = measured_t / predicted_t
        how = f"{ratio:.2g}x slower" if ratio > 1 else f"{1 / ratio:.2g}x faster"
        lines.append(f"differs: the network is {how} than {source} assumed, and so are advise's communication "
                     f"times: calibrate on these machines, or give advise --bandwidth {_advise_rate(check)} "
                     f"--latency {check.all_reduce.alpha_s * 1e6:.0f}us")
    return lines


def describe(check: NetworkCheck) -> list[str]:
    """The measurement in a few lines."""
    lines = [f"{check.workers} workers, {check.where}: measured in {check.seconds:.1f} s",
             f"all-reduce: latency {check.all_reduce.alpha_s * 1e6:.0f} us per message, "
             f"bandwidth {_rate(check.all_reduce.beta_s_per_byte)} through the slowest link"]
    if check.p2p is not None:
        lines.append(f"send/recv: latency {check.p2p.alpha_s * 1e6:.0f} us, bandwidth {_rate(check.p2p.beta_s_per_byte)}")
    return lines


def _rate(beta_s_per_byte: float) -> str:
    if beta_s_per_byte <= 0:
        return "unmeasured (no large message timed)"
    bits = 8.0 / beta_s_per_byte
    return f"{bits / 1e9:.3g} Gbit/s" if bits >= 1e9 else f"{bits / 1e6:.3g} Mbit/s"


def _advise_rate(check: NetworkCheck) -> str:
    bits = check.bandwidth_bits_per_s
    if bits is None:
        return "?"
    return f"{bits / 1e9:.2g}gbit" if bits >= 1e9 else f"{bits / 1e6:.3g}mbit"
