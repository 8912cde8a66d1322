"""Bench's rows: which (contender, workers, link) to train, from the strategy registry.

A contender is a strategy spec with an optional gradient compression (``ddp+topk:0.01``,
see ``strategies.split_contender``). The default list is the registry's
(``strategies.default_contenders``): a strategy added later becomes a row with no edit here.
Besides the contenders asked for, bench adds rows that explain the others:

* ``no-comm`` (kind "ceiling"), per worker count: the same worker processes with local SGD at a
  period no run reaches, so they never communicate while training. Its step time is the
  compute part of every row at that worker count (analysis.py), its samples/s a ceiling;
* ``torch-ddp`` (kind "reference"), per worker count and link, when ``ddp`` is a contender:
  a hand-written PyTorch DDP loop on the same data, model, optimizer and batch (torch_ddp.py);
* ``stale:W-1`` (kind "probe"): only when named in ``--strategies``; what staleness alone costs.

One process runs no parallel strategy: at 1 worker the only row is ``single`` (the baseline of
scaling efficiency), and ``single`` has no row above 1 worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from paratrain.errors import ConfigError

BASELINE = "single"
"""The contender that runs on one process: scaling efficiency is measured against it."""
CEILING = "no-comm"
REFERENCE = "torch-ddp"
NEVER = 2 ** 62
"""A localsgd period no run reaches: the workers never average while training."""


@dataclass(frozen=True)
class BenchRow:
    """One row of the bench table: a contender on some workers over one link."""

    spec: str
    """The contender as given ('ddp+topk:0.01'), or 'no-comm' / 'torch-ddp'."""
    workers: int
    link: str | None
    """Link name ('loopback', '100mbit'); None for one process, which sends nothing."""
    kind: str = "strategy"
    """'strategy' (a candidate), 'ceiling' (no communication), 'reference' (torch-ddp), 'probe' (stale)."""
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """FitConfig fields this row sets (strategy, compress, workers, link)."""

    @property
    def key(self) -> str:
        return f"{self.spec}@{self.workers}" + (f"@{self.link}" if self.link else "")

    @property
    def label(self) -> str:
        where = f", {self.link}" if self.link else ""
        return f"{self.spec} x{self.workers}{where}"


def parse_contenders(text: str | Sequence[str] | None) -> list[str]:
    """The contenders of ``--strategies`` ('single,ddp,ddp+topk:0.01'), checked against the registry.

    None or empty: the registry's defaults. ConfigError names the field, the rule and the value."""
    from paratrain.strategies import default_contenders, split_contender, strategy_class

    if text is None or (isinstance(text, str) and not text.strip()):
        return default_contenders()
    specs = [part.strip() for part in (text.split(",") if isinstance(text, str) else text) if part.strip()]
    for spec in specs:
        if spec in (CEILING, REFERENCE):
            continue
        try:
            strategy, _ = split_contender(spec)
            strategy_class(strategy)
        except ConfigError as error:
            raise ConfigError(f"strategies={spec!r} must be a known contender: {error}") from None
    if len(set(specs)) != len(specs):
        raise ConfigError(f"strategies={','.join(specs)!r} must not name a contender twice")
    return specs


def fit_fields(spec: str, workers: int, link: str | None) -> dict[str, Any]:
    """The FitConfig fields of one contender on ``workers`` processes over ``link``."""
    from paratrain.strategies import split_contender

    if spec == CEILING:
        strategy, compress = f"localsgd:{NEVER}", None
    else:
        strategy, compress = split_contender(spec)
    fields: dict[str, Any] = {"strategy": strategy, "workers": workers}
    if compress:
        fields["compress"] = compress
    if link:
        fields["link"] = link
    return fields


def build_rows(contenders: Sequence[str], workers: Sequence[int], links: Sequence[str]) -> list[BenchRow]:
    """Every row, ordered by link, then workers, then the contenders' order."""
    from paratrain.strategies import split_contender, strategy_class

    rows: list[BenchRow] = []
    named_reference = REFERENCE in contenders
    specs = [spec for spec in contenders if spec not in (CEILING, REFERENCE)]
    has_ddp = any(split_contender(spec) == ("ddp", None) for spec in specs)
    if 1 in workers and BASELINE in specs:
        rows.append(BenchRow(BASELINE, 1, None, "strategy", fit_fields(BASELINE, 1, None)))
    for link in links:
        for count in sorted(set(w for w in workers if w > 1)):
            for spec in specs:
                strategy, _ = split_contender(spec)
                if spec == BASELINE:
                    continue
                kind = "probe" if strategy_class(strategy).diagnostic_only else "strategy"
                if kind == "probe":
                    # A probe runs on one process; without a delay of its own, it stands for the
                    # staleness of count asynchronous workers (count - 1 updates).
                    strategy = strategy if ":" in strategy else f"{strategy}:{count - 1}"
                    rows.append(BenchRow(strategy, 1, None, kind, {"strategy": strategy, "workers": 1}))
                    continue
                rows.append(BenchRow(spec, count, link, kind, fit_fields(spec, count, link)))
            if has_ddp or named_reference:
                rows.append(BenchRow(REFERENCE, count, link, "reference", {"workers": count, "link": link}))
            # The ceiling never communicates while training: one row per worker count serves every link.
            if link == links[0]:
                rows.append(BenchRow(CEILING, count, None, "ceiling", fit_fields(CEILING, count, None)))
    return list(dict.fromkeys(rows))  # a probe named once serves every link


def check_workers(workers: Sequence[int]) -> list[int]:
    """``--workers`` as sorted distinct counts >= 1."""
    if not workers or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in workers):
        raise ConfigError(f"workers={list(workers)!r} must be a non-empty list of integers >= 1, e.g. 1,2")
    return sorted(set(workers))
