"""`single`: one process, the baseline. Parallelism comes from intra-op threads."""

from __future__ import annotations

from paratrain.strategies.base import Strategy


class SingleProcess(Strategy):
    """One process using all its intra-op threads; the reference every strategy is checked against."""

    name = "single"
    bench_specs = ("single",)
    description = "one process using intra-op threads; the baseline"
