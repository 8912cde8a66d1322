"""`paratrain advise`: rank the contenders by predicted time to target, with the reason for each.

Nothing heavy runs: predictions come from a calibration file, or from a quick
in-process probe of a few training steps (< 5 s) cached per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from paratrain.costmodel.calibration import Calibration
from paratrain.costmodel.convergence import factor
from paratrain.costmodel.network import Network
from paratrain.costmodel.predict import predict_step
from paratrain.costmodel.step import Prediction, ms, size
from paratrain.errors import ConfigError


DEFAULT_MACHINE_RATE = 10e9
"""Bits per second between machines assumed when saying where data parallelism would pay for
workers that share this machine (no rate was given)."""


@dataclass(frozen=True)
class Choice:
    """One ranked contender."""

    prediction: Prediction
    instances: int
    """Machines it occupies (1 when every worker shares one machine)."""
    convergence_factor: float
    convergence_note: str
    time_to_target_s: float
    speedup: float
    """Samples per second against one worker."""
    cost: float | None
    reason: str

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "instances": self.instances,
                "convergence_factor": self.convergence_factor, "convergence_note": self.convergence_note,
                "time_to_target_s": self.time_to_target_s, "speedup_vs_1_worker": self.speedup,
                "cost": self.cost, "reason": self.reason}


@dataclass
class Advice:
    """Contenders ranked by time to target (fastest first), and what to say about scaling."""

    network: Network
    workers: int
    samples_to_target: float
    ranked: list[Choice] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verdict: str = ""
    memory_per_worker: float | None = None
    """Bytes each worker may use; contenders predicted to need more are in ``ruled_out``."""
    ruled_out: list[Choice] = field(default_factory=list)
    """Contenders that do not fit in ``memory_per_worker`` (smallest need first), with the reason."""

    @property
    def best(self) -> Choice:
        if not self.ranked:
            raise ConfigError(self.verdict or "no contender could be predicted")
        return self.ranked[0]

    def to_dict(self) -> dict:
        return {"network": self.network.describe(), "workers": self.workers,
                "samples_to_target": self.samples_to_target, "verdict": self.verdict,
                "ranked": [choice.to_dict() for choice in self.ranked], "skipped": self.skipped,
                "memory_per_worker": self.memory_per_worker,
                "ruled_out": [choice.to_dict() for choice in self.ruled_out]}


def advise(calibration: Calibration, network: Network, workers: int, samples_to_target: float,
           price_per_hour: float | None = None, contenders: list[str] | None = None,
           bench_factors: dict | None = None, verdict: bool = True, memory_per_worker: float | None = None,
           options: dict | None = None) -> Advice:
    """Rank ``contenders`` (default: the registry's) for ``workers`` on ``network``; ``verdict``
    also says from how many machines data parallelism pays when it does not here.

    ``memory_per_worker`` (bytes) rules out the contenders predicted to need more per worker;
    ``options`` are the run's strategy settings (microbatches, pipeline_schedule, ...). A
    contender without a cost model, or one that cannot run on ``workers``, is listed in
    ``skipped`` with the reason."""
    from paratrain.strategies import advise_contenders, split_contender, strategy_class

    advice = Advice(network, workers, samples_to_target, memory_per_worker=memory_per_worker)
    names = contenders if contenders is not None else advise_contenders()
    reference = predict_step(calibration, _single(names), 1, network, options)
    for name in names:
        cls = strategy_class(split_contender(name)[0])
        if cls.diagnostic_only:
            continue
        if not cls.runs_across_hosts and (not network.shared_machine or network.bytes_per_s is not None):
            advice.skipped.append(f"{name}: its workers must share one machine's memory, not a link")
            continue
        p = workers if cls.needs_process_group else 1
        try:
            prediction = predict_step(calibration, name, p, network, options)
        except ConfigError as exc:  # no cost model, or not on this many workers: say so, rank the rest
            advice.skipped.append(f"{name}: {exc}")
            continue
        conv, note = factor(name, p, network.name, bench_factors)
        seconds = samples_to_target * conv / prediction.samples_per_s
        instances = 1 if network.shared_machine else p
        cost = price_per_hour * instances * seconds / 3600 if price_per_hour is not None else None
        speedup = prediction.samples_per_s / reference.samples_per_s
        reason = prediction.reason
        if conv != 1.0:
            reason += f"; {note}"
        choice = Choice(prediction, instances, conv, note, seconds, speedup, cost, reason)
        if memory_per_worker is not None and prediction.memory_bytes > memory_per_worker:
            advice.ruled_out.append(Choice(**{**choice.__dict__, "reason": _too_big(prediction, memory_per_worker)}))
        else:
            advice.ranked.append(choice)
    advice.ranked.sort(key=lambda choice: choice.time_to_target_s)
    advice.ruled_out.sort(key=lambda choice: choice.prediction.memory_bytes)
    _compare_traffic(advice)
    if not advice.ranked:
        advice.verdict = _nothing_fits(advice)
    elif verdict:
        advice.verdict = _verdict(calibration, advice, names, samples_to_target, bench_factors, options)
    return advice


def _too_big(prediction: Prediction, limit: float) -> str:
    """'needs 3.1 GiB per worker, more than the 2 GiB given (...)'."""
    parts = prediction.memory.parts() if prediction.memory is not None else size(prediction.memory_bytes)
    return f"needs {size(prediction.memory_bytes)} per worker, more than the {_given(limit)} given ({parts})"


def _given(nbytes: float) -> str:
    """A size as the user likely wrote it: '2 GiB', not '2.0 GiB'."""
    return size(nbytes).replace(".0 ", " ")


def _nothing_fits(advice: Advice) -> str:
    if advice.ruled_out:
        least = advice.ruled_out[0].prediction
        return (f"no contender fits in {_given(advice.memory_per_worker or 0)} per worker; the smallest, "
                f"{_label(least)}, needs {size(least.memory_bytes)}")
    return "no contender could be predicted: " + "; ".join(advice.skipped)


def advise_for_config(config, frame, workers: int, network: Network | None = None,
                      calibration_path: str | None = None, price_per_hour: float | None = None,
                      bench_factors: dict | None = None,
                      memory_per_worker: float | None = None) -> tuple[Advice, Calibration]:
    """Advice for a fit config's model and data: from the calibration file at ``calibration_path``
    (checked against the model), or (None) a quick in-process probe; ``network`` None means the
    workers share this machine. Samples to target are the config's epochs over its training rows;
    the strategies' settings are the config's (``parallel.options``).

    Example:
        >>> advice, _ = advise_for_config(config, frame, 4, memory_per_worker=2 * 2**30)  # doctest: +SKIP
        >>> [choice.prediction.contender for choice in advice.ruled_out]  # doctest: +SKIP
    """
    from paratrain.costmodel.calibrate import workload_from_config
    from paratrain.costmodel.calibration import load_calibration
    from paratrain.costmodel.probe import probe_calibration
    from paratrain.launch.links import LOOPBACK

    workload = workload_from_config(config, frame)
    if calibration_path is not None:
        calibration = load_calibration(calibration_path)
        calibration.check_model(workload.fingerprint(), calibration_path)
    else:
        calibration = probe_calibration(workload)
    if network is None:
        network = Network(LOOPBACK, None, None, shared_machine=True)
    samples = config.train.epochs * len(frame) * (1 - config.data.val_fraction)
    advice = advise(calibration, network, workers, samples, price_per_hour, bench_factors=bench_factors,
                    memory_per_worker=memory_per_worker, options=config.parallel.options)
    return advice, calibration


def _single(names: list[str]) -> str:
    """The one-process contender: the strategy that needs no process group."""
    from paratrain.strategies import known_strategies, split_contender, strategy_class

    for name in names + known_strategies():
        if not strategy_class(split_contender(name)[0]).needs_process_group:
            return name
    raise ValueError("no one-process strategy")


def _compare_traffic(advice: Advice) -> None:
    """Add '; powersgd:4 sends 69x less' to the dense ddp row's reason when a compressed row sends less."""
    from paratrain.strategies import split_contender, strategy_class

    def kind(choice: Choice) -> tuple[bool, bool]:
        strategy, compress = split_contender(choice.prediction.contender)
        return strategy_class(strategy).supports_compression, compress is not None

    sending = [c for c in advice.ranked if c.prediction.comm_bytes > 0]
    dense = [c for c in sending if kind(c) == (True, False)]
    compressed = [c for c in sending if kind(c) == (True, True)]
    if not dense or not compressed:
        return
    best = min(compressed, key=lambda c: c.prediction.comm_bytes)
    ratio = dense[0].prediction.comm_bytes / best.prediction.comm_bytes
    index = advice.ranked.index(dense[0])
    extra = f"; {best.prediction.contender.partition('+')[2]} sends {ratio:.0f}x less"
    advice.ranked[index] = Choice(**{**dense[0].__dict__, "reason": dense[0].reason + extra})


def _verdict(calibration: Calibration, advice: Advice, names: list[str], samples: float,
             bench: dict | None, options: dict | None = None) -> str:
    best = advice.best
    if best.prediction.workers > 1:
        return (f"{best.prediction.contender} on {best.prediction.workers} workers is predicted fastest: "
                f"{best.speedup:.1f}x the samples/s of one worker")
    threads = calibration.compute[1].threads
    where = "on this machine" if advice.network.shared_machine else "on one machine"
    text = f"{where} one process with {threads} threads is fastest; more workers do not pay here"
    # From how many separate machines at this rate (loopback: a common data-centre rate) would
    # the best data-parallel contender win?
    if advice.network.bytes_per_s is None:
        machines = Network("10gbit", DEFAULT_MACHINE_RATE / 8, None, False, None)
    else:
        machines = Network(advice.network.name, advice.network.bytes_per_s, advice.network.latency_s, False,
                           advice.network.cores_per_worker)
    for count in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024):
        trial = advise(calibration, machines, count, samples, None, names, bench, verdict=False,
                       memory_per_worker=advice.memory_per_worker, options=options)
        if trial.ranked and trial.best.prediction.workers > 1:
            rate = machines.describe().replace(" between machines", "")
            return (f"{text}; data parallelism pays from {count} machines on at {rate} "
                    f"({trial.best.prediction.contender})")
    within = f" within {_given(advice.memory_per_worker)} per worker" if advice.memory_per_worker else ""
    return text + f"; data parallelism does not pay at this rate up to 1024 machines{within}"


def format_advice(advice: Advice, price_per_hour: float | None = None) -> str:
    """The ranked table and the verdict, for the terminal."""
    lines = [f"{advice.workers} workers, {advice.network.describe()}; ranked by predicted time to target "
             f"({advice.samples_to_target:,.0f} samples for dense training)", ""]
    header = f"{'#':>2}  {'contender':18s} {'step':>9s} {'samples/s':>11s} {'speedup':>8s} {'mem/worker':>10s} {'to target':>10s}"
    if price_per_hour is not None:
        header += f" {'cost':>9s}"
    lines.append(header)
    for index, choice in enumerate(advice.ranked, 1):
        p = choice.prediction
        row = (f"{index:>2}  {_label(p):18s} {ms(p.step_s):>9s} {p.samples_per_s:>11,.0f} {choice.speedup:>7.2f}x "
               f"{size(p.memory_bytes):>10s} {_duration(choice.time_to_target_s):>10s}")
        if choice.cost is not None:
            row += f" {'$' + format(choice.cost, ',.2f'):>9s}"
        lines.append(row)
        lines.append(f"      {choice.reason}")
        if p.memory is not None:
            lines.append(f"      memory: {p.memory.describe()}")
    if advice.ruled_out:
        lines += ["", f"ruled out: predicted to need more than the {_given(advice.memory_per_worker or 0)} "
                      "per worker given"]
        for choice in advice.ruled_out:
            lines.append(f"    {_label(choice.prediction):18s} {choice.reason}")
    for note in advice.skipped:
        lines.append(f"    skipped {note}")
    lines += ["", advice.verdict]
    return "\n".join(lines)


def _label(prediction: Prediction) -> str:
    return f"{prediction.contender} x{prediction.workers}" if prediction.workers > 1 else prediction.contender


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
