"""A quick in-process compute probe (< 5 s) for advise and ``fit --strategy auto`` without a
calibration file: one process's step, top-k and PowerSGD arithmetic, memory; no processes are
started, so collectives use loopback defaults. Cached per model fingerprint and machine."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from paratrain.costmodel.calibration import Calibration, ComputeProfile, load_calibration
from paratrain.costmodel.probes import (Workload, measure_compute, measure_powersgd, measure_topk, memory_estimate,
                                        rss_bytes)

PROBE_BUDGET_S = 4.0
CACHE_S = 3600.0
"""A probe is reused for an hour: a machine's load (and so its speed) changes over the day."""


def cache_dir() -> Path:
    """Beside the precision probes: $PARATRAIN_CACHE_DIR (or the XDG default) / calibrations."""
    from paratrain.train.probecache import cache_dir as paratrain_cache_dir

    return paratrain_cache_dir() / "calibrations"


def cache_path(workload: Workload, cores: int) -> Path:
    key = json.dumps({**workload.fingerprint().to_dict(), "cores": cores, "optimizer": workload.optim.optimizer},
                     sort_keys=True)
    return cache_dir() / f"probe-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def probe_calibration(workload: Workload, use_cache: bool = True) -> Calibration:
    """A calibration from a few steps of this model in this process (threads: every core)."""
    import torch

    from paratrain.launch.env import default_threads
    from paratrain.launch.resources import usable_cores

    cores = usable_cores()
    path = cache_path(workload, cores)
    if use_cache and path.is_file() and time.time() - path.stat().st_mtime < CACHE_S:
        try:
            return load_calibration(path)
        except Exception:  # a damaged cache is measured again
            pass
    started = time.monotonic()
    threads = default_threads(1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        figures = measure_compute(workload, repeats=3)
        step = figures["step_s"]
        repeats = int(max(1, min(5, PROBE_BUDGET_S / 4 / max(step, 1e-4))))
        if repeats > 3:
            figures = measure_compute(workload, repeats)
        figures["topk_encode_s"], figures["topk_decode_fixed_s"], figures["topk_decode_per_rank_s"] = \
            measure_topk(workload, 2)
        figures["powersgd_compute_s"] = measure_powersgd(workload, 2)
    finally:
        torch.set_num_threads(before)
    profile = ComputeProfile(1, threads, figures["step_s"], figures["forward_backward_s"], figures["optimizer_s"],
                             figures["per_sample_s"], topk_encode_s=figures["topk_encode_s"],
                             topk_decode_fixed_s=figures["topk_decode_fixed_s"],
                             topk_decode_per_rank_s=figures["topk_decode_per_rank_s"],
                             powersgd_compute_s=figures["powersgd_compute_s"])
    calibration = Calibration(workload.fingerprint(), cores, compute={1: profile}, optimizer=workload.optim.optimizer,
                              source="probe", memory={**memory_estimate(workload), "process_rss": rss_bytes()})
    calibration.measured.append(f"quick probe: 1 process x {threads} threads, {repeats} steps; collectives not "
                                "measured (loopback defaults); more workers scaled from it")
    calibration.elapsed_s = time.monotonic() - started
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        calibration.save(path)
    except OSError:
        pass  # a cache that cannot be written is only slower next time
    return calibration
