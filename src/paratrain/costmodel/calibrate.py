"""`paratrain calibrate`: measure this machine for one model, within a hard time budget.

Order: one process's compute (in this process, all cores), then per worker
count p >= 2 one launch of p real gloo ranks that times the collectives over
message sizes 1 KiB .. 64 MiB and one worker's step while all p step at once,
then (where the launcher can emulate links) the collectives on each emulated
link. Each stage gets a share of what is left of the budget; sizes, repeats and
whole stages are trimmed to fit, and ``Calibration.measured`` says what was.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import signal
import threading
import time
from typing import Any, Callable, Sequence

import pandas as pd

from paratrain.config import FitConfig
from paratrain.costmodel.calibration import Calibration, ComputeProfile
from paratrain.costmodel.fitting import collective_time, fit_alpha_beta
from paratrain.costmodel.probes import Workload, measure_compute, measure_powersgd, measure_topk, memory_estimate, rss_bytes
from paratrain.errors import ConfigError
from paratrain.launch.links import LOOPBACK, Link

log = logging.getLogger("paratrain")

SIZES = tuple(1024 * 4 ** i for i in range(9))
"""1 KiB, 4 KiB, ... 64 MiB."""
LAUNCH_S = 6.0
"""A launch of p workers costs a few seconds before any work (start, import torch, rendezvous);
measured 3-5 s on a loaded 2-core machine. A stage that cannot get this much more is skipped."""
MAX_BUDGET_S = 60.0
STOP_S = 5.0
MAX_INFLATION = 10.0
"""Cap on comm_inflation: on a machine loaded by others one disturbed DDP step can make the ratio
of two short timings meaningless (seen: 35x); 10x is beyond anything measured quietly."""
"""Stopping a stage's workers takes up to a few seconds: a stage is cut this long before the budget ends."""


def workload_from_config(config: FitConfig, frame: pd.DataFrame | None = None) -> Workload:
    """The step the config trains: its model on its data's columns, its optimizer, its batch size."""
    from paratrain.data.prepare import encode_table, load_frame
    from paratrain.models import ModelSpec

    table = encode_table(config, frame if frame is not None else load_frame(config.data.path))
    task = table.encoder.task
    n_outputs = len(table.encoder.classes) if task == "classification" else 1
    spec = ModelSpec(config.model, tuple(table.encoder.feature_names_out), n_outputs)
    return Workload(spec, config.optim, task, config.train.batch_size)


def link_launch_supported() -> bool:
    """True when ``launch_local`` takes ``link=`` (workers in network namespaces)."""
    from paratrain.launch.local import launch_local

    return "link" in inspect.signature(launch_local).parameters


def calibrate(workload: Workload, workers: Sequence[int] = (1, 2), links: Sequence[Link] = (Link(LOOPBACK),),
              budget_s: float = MAX_BUDGET_S, say: Callable[[str], None] = lambda text: None) -> Calibration:
    """Measure compute for every worker count in ``workers`` (1 always) and collectives on ``links``."""
    from paratrain.launch.env import default_threads
    from paratrain.launch.resources import usable_cores

    if not 0 < budget_s <= MAX_BUDGET_S:
        raise ConfigError(f"budget_s={budget_s!r} must be > 0 and <= {MAX_BUDGET_S:g} seconds")
    started = time.monotonic()
    end = started + budget_s
    counts = sorted({1, *(int(p) for p in workers)})
    calibration = Calibration(fingerprint=workload.fingerprint(), cores=usable_cores(), budget_s=budget_s,
                              optimizer=workload.optim.optimizer)
    calibration.memory.update(memory_estimate(workload))
    points: dict[str, dict[str, list]] = {}

    calibration.compute[1] = _one_process(workload, default_threads(1), end, say)
    calibration.measured.append(f"compute: 1 process x {default_threads(1)} threads, batch {workload.batch_size}")
    multi = [p for p in counts if p >= 2]
    emulated = [link for link in links if link.emulated]
    if emulated and not link_launch_supported():
        calibration.measured.append(f"skipped links {', '.join(l.name for l in emulated)}: this launcher cannot "
                                    "emulate links; advise uses their nominal rate with loopback's latency")
        emulated = []
    stages: list[tuple[int, Link | None, bool]] = [(p, None, True) for p in multi]
    stages += [(min(multi or [2]), link, False) for link in emulated]
    for index, (p, link, with_compute) in enumerate(stages):
        left = end - time.monotonic()
        share = left / (len(stages) - index)
        if share < LAUNCH_S + 2:
            calibration.measured.append(f"skipped {p} workers{' on ' + link.name if link else ''}: "
                                        f"{left:.0f} s of the budget left")
            continue
        try:
            with hard_limit(end - time.monotonic() - STOP_S):
                result = _launch_stage(workload if with_compute else None, p, default_threads(p), link, share, say)
        except BudgetExceeded:
            calibration.measured.append(f"stopped {p} workers{' on ' + link.name if link else ''} at the "
                                        f"{budget_s:g} s budget (the machine is slow to start workers)")
            continue
        link_name = link.name if link is not None else LOOPBACK
        for name, rows in result.get("collectives", {}).items():
            points.setdefault(link_name, {}).setdefault(name, []).extend(tuple(row) for row in rows)
        sizes = sorted({row[1] for rows in result.get("collectives", {}).values() for row in rows})
        size_text = f"{_size(sizes[0])}..{_size(sizes[-1])} ({len(sizes)} sizes)" if sizes else "no sizes"
        calibration.measured.append(f"collectives on {link_name}, {p} workers: {size_text}")
        if "compute" in result:
            figures = result["compute"]
            calibration.compute[p] = _profile(p, default_threads(p), figures)
            calibration.memory["process_rss"] = max(calibration.memory.get("process_rss", 0.0),
                                                    figures.get("process_rss", 0.0))
            calibration.measured.append(f"compute: {p} concurrent workers x {default_threads(p)} threads")
    for link_name, by_collective in points.items():
        calibration.collectives[link_name] = {name: fit_alpha_beta(name, rows)
                                              for name, rows in by_collective.items() if rows}
    _ddp_overheads(calibration)
    calibration.elapsed_s = time.monotonic() - started
    return calibration


class BudgetExceeded(Exception):
    """The calibration's time budget ran out in the middle of a stage."""


@contextlib.contextmanager
def hard_limit(seconds: float):
    """Raise BudgetExceeded in this (main) thread after ``seconds``: the launcher's clean-up then
    stops the workers. Elsewhere than the main thread there is no alarm; the job's own deadlines
    still trim its work."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise BudgetExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _one_process(workload: Workload, threads: int, end: float, say: Callable[[str], None]) -> ComputeProfile:
    import torch

    say(f"compute: 1 process, {threads} threads")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        repeats = _repeats(workload, end)
        figures = measure_compute(workload, repeats)
        figures["topk_encode_s"], figures["topk_decode_fixed_s"], figures["topk_decode_per_rank_s"] = \
            measure_topk(workload, max(3, repeats // 2))
        figures["process_rss"] = rss_bytes()
        figures["powersgd_compute_s"] = measure_powersgd(workload, max(3, repeats // 2))
    finally:
        torch.set_num_threads(before)
    return _profile(1, threads, figures)


def _repeats(workload: Workload, end: float) -> int:
    """Timed steps that fit in a tenth of what is left (at least 3, at most 20)."""
    from paratrain.costmodel.probes import time_steps

    model, optimizer = workload.build()
    start = time.perf_counter()
    time_steps(workload, model, optimizer, workload.batch_size, 1)
    one = max(1e-4, time.perf_counter() - start)
    return int(max(3, min(20, (end - time.monotonic()) / 10 / (2 * one))))


def _launch_stage(workload: Workload | None, workers: int, threads: int, link: Link | None, share: float,
                  say: Callable[[str], None]) -> dict[str, Any]:
    from paratrain.costmodel.job import CalibrationJob
    from paratrain.launch.local import launch_local

    say(f"{workers} workers{' on ' + link.name if link else ''}: collectives" + (" and compute" if workload else ""))
    # The job's own deadline leaves room for its start and for the compute part after the collectives
    # (which times every contender's real step too: the larger part).
    work = share - LAUNCH_S
    collective_part = work * (0.3 if workload is not None else 1.0)
    deadline = time.time() + LAUNCH_S + collective_part
    repeats = 3 if share > 15 else 2
    job = CalibrationJob(threads=threads, deadline=deadline, sizes=SIZES, repeats=repeats, workload=workload,
                         compute_repeats=10, end=time.time() + share - 1.0,
                         strategy_steps=5 if workload is not None else 0)
    kwargs = {"link": link} if link is not None and link.emulated else {}
    return launch_local(job, workers, **kwargs)


def _profile(workers: int, threads: int, figures: dict[str, float]) -> ComputeProfile:
    return ComputeProfile(workers=workers, threads=threads, step_s=figures["step_s"],
                          forward_backward_s=figures["forward_backward_s"], optimizer_s=figures["optimizer_s"],
                          per_sample_s=figures["per_sample_s"], ddp_step_s=figures.get("ddp_step_s"),
                          ddp_nocomm_step_s=figures.get("ddp_nocomm_step_s"),
                          topk_encode_s=figures.get("topk_encode_s"),
                          topk_decode_fixed_s=figures.get("topk_decode_fixed_s"),
                          topk_decode_per_rank_s=figures.get("topk_decode_per_rank_s"),
                          powersgd_compute_s=figures.get("powersgd_compute_s"),
                          strategy_step_s=dict(figures.get("strategy_step_s") or {}))


def _ddp_overheads(calibration: Calibration) -> None:
    """DDP's own cost per step (its step without communication, less compute), and how much the
    all-reduce inside a DDP step outlasts the same all-reduce timed alone (cores busy computing)."""
    fits = calibration.collectives.get(LOOPBACK, {})
    dense = calibration.memory.get("gradients", 4.0 * calibration.parameters)
    for p, profile in list(calibration.compute.items()):
        if profile.ddp_step_s is None:
            continue
        nocomm = profile.ddp_nocomm_step_s if profile.ddp_nocomm_step_s is not None else profile.step_s
        overhead = max(0.0, nocomm - profile.step_s)
        inflation = None
        if "all_reduce" in fits:
            comm = collective_time(fits["all_reduce"], "all_reduce", p, dense)
            inflation = min(MAX_INFLATION, max(1.0, (profile.ddp_step_s - nocomm) / comm)) if comm > 0 else 1.0
        calibration.compute[p] = ComputeProfile(**{**profile.to_dict(), "ddp_overhead_s": overhead,
                                                   "comm_inflation": inflation})


def _size(nbytes: int) -> str:
    return f"{nbytes // 2**20} MiB" if nbytes >= 2**20 else f"{nbytes // 1024} KiB"


__all__ = ["calibrate", "link_launch_supported", "workload_from_config"]
