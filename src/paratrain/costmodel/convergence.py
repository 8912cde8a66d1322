"""Steps to target relative to dense synchronous training: each contender's convergence factor.

Time to target = samples to target x factor / samples per second. Synchronous dense
training (single, ddp with an exact all-reduce) sees the same gradients per sample:
factor 1. Strategies that see stale, sparse or local gradients need more samples; from a
bench.json that measured them on this workload the factor is measured, otherwise a
conservative default below is used and the reason says so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from paratrain.errors import ConfigError

DEFAULTS = {
    "powersgd": 1.2,   # low-rank with error feedback: usually within a few % of dense per epoch
    "topk": 1.5,       # 1% of entries with error feedback: bursty updates (README Part 2: 13-18% worse at equal lr)
    "localsgd": 1.3,   # 8 local steps between averages: drift between workers
    "sparse": 1.3,     # shares 1% of the update per step, the rest later
    "async": 1.5,      # stale gradients, growing with workers
    "hogwild": 1.2,    # racing writes; small for dense MLP updates on few workers
    "int8": 1.05, "fp16": 1.0, "bf16": 1.02,
}
"""Assumed factors where bench has not measured them (multiples of dense ddp's samples to target)."""


def default_factor(contender: str) -> tuple[float, str]:
    """(factor, why) without measurements."""
    from paratrain.strategies import split_contender, split_strategy_name
    from paratrain.strategies.compression import parse_compression

    strategy, compress = split_contender(contender)
    name, _ = split_strategy_name(strategy)
    spec = parse_compression(compress)
    key = spec.name if spec is not None else name
    if key in DEFAULTS:
        return DEFAULTS[key], f"assumed {DEFAULTS[key]:g}x the samples of dense ddp to reach the target (not measured)"
    return 1.0, "same samples to target as dense ddp (synchronous, exact)"


def bench_factors(path: str | Path) -> dict[tuple[str, int, str], float]:
    """(strategy, workers, link) -> samples to target relative to ddp's at the same workers and link,
    from a bench.json's rows (rows that never reached the target are left out)."""
    try:
        rows = json.loads(Path(path).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"bench={str(path)!r} is not a bench.json with rows ({exc})") from None
    samples = {}
    for row in rows:
        t, rate = row.get("time_to_target_s"), row.get("samples_per_s")
        if t is None or rate is None or not math.isfinite(t * rate):
            continue
        samples[(row["strategy"], int(row["workers"]), str(row["link"]))] = t * rate
    factors = {}
    for (strategy, workers, link), value in samples.items():
        dense = samples.get(("ddp", workers, link))
        if dense:
            factors[(strategy, workers, link)] = value / dense
    return factors


def factor(contender: str, workers: int, link: str, measured: dict | None = None) -> tuple[float, str]:
    """The factor for this contender: measured by bench (same workers, any link, nearest workers), else the default."""
    if workers <= 1:
        return 1.0, "one worker: the reference number of samples"
    if measured:
        same = {k: v for k, v in measured.items() if k[0] == contender}
        if same:
            key = min(same, key=lambda k: (k[2] != link, abs(k[1] - workers)))
            return same[key], f"bench measured {same[key]:.2f}x ddp's samples to target ({key[1]} workers, {key[2]})"
    return default_factor(contender)
