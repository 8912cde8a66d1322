"""Parallel strategies, chosen by name.

Adding a strategy means adding one module and one entry in ``_REGISTRY``.
A name may carry an argument after a colon (``localsgd:8``); the strategy
class parses it.
"""

from __future__ import annotations

import dataclasses

from paratrain.errors import ConfigError
from paratrain.strategies.base import Strategy, WorkerContext


def _registry() -> dict[str, type[Strategy]]:
    # Imported lazily so that `paratrain --help` does not pay for torch.distributed.
    from paratrain.strategies.async_ps import AsyncParameterServerStrategy
    from paratrain.strategies.ddp import DistributedDataParallelStrategy
    from paratrain.strategies.fsdp import FullyShardedDataParallel
    from paratrain.strategies.hogwild import HogwildStrategy
    from paratrain.strategies.localsgd import LocalSGD
    from paratrain.strategies.pipeline import PipelineStrategy
    from paratrain.strategies.single import SingleProcess
    from paratrain.strategies.sparse import SparseAveraging
    from paratrain.strategies.stale import StaleGradients
    from paratrain.strategies.tensor import TensorParallel
    from paratrain.strategies.zero1 import ZeroRedundancyDataParallel

    return {cls.name: cls for cls in (SingleProcess, DistributedDataParallelStrategy,
                                         AsyncParameterServerStrategy, HogwildStrategy, LocalSGD,
                                         SparseAveraging, StaleGradients, FullyShardedDataParallel,
                                         ZeroRedundancyDataParallel, PipelineStrategy, TensorParallel)}


def known_strategies() -> list[str]:
    """Names of the strategies that exist."""
    return list(_registry())


def split_strategy_name(spec: str) -> tuple[str, str | None]:
    """'localsgd:8' -> ('localsgd', '8'); 'ddp' -> ('ddp', None)."""
    name, sep, argument = spec.partition(":")
    return name, (argument if sep else None)


def strategy_class(spec: str) -> type[Strategy]:
    """The class behind a strategy name, or a ConfigError listing the known names."""
    name, _ = split_strategy_name(spec)
    registry = _registry()
    if name not in registry:
        raise ConfigError(f"strategy={spec!r} is unknown; known strategies: {', '.join(registry)}")
    return registry[name]


def split_contender(spec: str) -> tuple[str, str | None]:
    """'ddp+topk:0.01' -> ('ddp', 'topk:0.01'); 'localsgd:8' -> ('localsgd:8', None).

    A contender (bench's and advise's unit) is a strategy, optionally with the gradient
    compression after a '+'. ConfigError for an unknown strategy or a compression the
    strategy does not support."""
    strategy, sep, compress = spec.partition("+")
    cls = strategy_class(strategy)
    if sep and not cls.supports_compression:
        able = [name for name, c in _registry().items() if c.supports_compression]
        raise ConfigError(f"{spec!r}: strategy {strategy!r} takes no compression ('+{compress}'); "
                          f"compression applies to: {', '.join(able)}")
    if sep and not compress:
        raise ConfigError(f"{spec!r}: nothing after '+'; give a compression such as {strategy}+topk:0.01")
    return strategy, (compress if sep else None)


def contender_options(contender: str, **candidates: object) -> tuple[str, dict[str, object]]:
    """A contender's strategy spec and the ``ParallelConfig.options`` to run it with: its compression
    (after '+') and those of ``candidates`` that the strategy declares, so that code building configs
    for several contenders can offer every setting to each (``powersgd_warmup=2``).

    Example:
        >>> contender_options("ddp+powersgd:4", powersgd_warmup=2, sync_warmup=0)
        ('ddp', {'compress': 'powersgd:4', 'powersgd_warmup': 2})
        >>> contender_options("localsgd:8", powersgd_warmup=2)
        ('localsgd:8', {})
    """
    strategy, compress = split_contender(contender)
    declared = strategy_class(strategy).Options.field_names()
    options = {key: value for key, value in candidates.items() if key in declared}
    if compress is not None:
        options["compress"] = compress
    return strategy, options


def default_contenders(include_single: bool = True) -> list[str]:
    """Every way to train that bench and advise try by default, from the registry's capabilities:
    each strategy's ``bench_specs``, and those that support compression once more with each of
    ``compression.BENCH_COMPRESSORS``. Diagnostic probes (``stale``) are left out."""
    from paratrain.strategies.compression import BENCH_COMPRESSORS

    specs: list[str] = []
    for cls in _registry().values():
        # include_single=False: only the contenders that spread the work over several processes.
        if cls.diagnostic_only or (not cls.needs_process_group and not include_single):
            continue
        for spec in cls.bench_specs:
            specs.append(spec)
            if cls.supports_compression:
                specs.extend(f"{spec}+{compressor}" for compressor in BENCH_COMPRESSORS)
    return specs


def advise_contenders() -> list[str]:
    """What ``advise`` ranks by default: ``default_contenders()`` and every strategy's ``advise_specs``."""
    specs = default_contenders()
    for cls in _registry().values():
        specs.extend(spec for spec in cls.advise_specs if spec not in specs)
    return specs


def strategy_option_fields() -> dict[str, list[str]]:
    """Each option name some strategy declares, with the strategies that take it."""
    owners: dict[str, list[str]] = {}
    for name, cls in _registry().items():
        for option in cls.Options.field_names():
            owners.setdefault(option, []).append(name)
    return owners


def strategy_option_defaults() -> dict[str, object]:
    """Each option name some strategy declares, with its default (the first declaring strategy's)."""
    defaults: dict[str, object] = {}
    for cls in _registry().values():
        for option in dataclasses.fields(cls.Options):
            defaults.setdefault(option.name, option.default)
    return defaults


def create_strategy(spec: str, options=None) -> Strategy:
    """Build a strategy object from its name (and optional ':argument') and the run's ParallelConfig."""
    _, argument = split_strategy_name(spec)
    return strategy_class(spec)(argument, options)


__all__ = ["Strategy", "WorkerContext", "contender_options", "create_strategy", "default_contenders", "known_strategies", "split_contender",
           "split_strategy_name", "strategy_class", "strategy_option_defaults", "strategy_option_fields"]
