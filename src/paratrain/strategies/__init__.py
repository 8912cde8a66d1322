"""Parallel strategies, chosen by name.

Adding a strategy means adding one module and one entry in ``_REGISTRY``.
A name may carry an argument after a colon (``localsgd:8``); the strategy
class parses it.
"""

from __future__ import annotations

from paratrain.errors import ConfigError
from paratrain.strategies.base import Strategy, WorkerContext


def _registry() -> dict[str, type[Strategy]]:
    # Imported lazily so that `paratrain --help` does not pay for torch.distributed.
    from paratrain.strategies.async_ps import AsyncParameterServerStrategy
    from paratrain.strategies.ddp import DistributedDataParallelStrategy
    from paratrain.strategies.hogwild import HogwildStrategy
    from paratrain.strategies.localsgd import LocalSGD
    from paratrain.strategies.single import SingleProcess
    from paratrain.strategies.sparse import SparseAveraging
    from paratrain.strategies.stale import StaleGradients

    return {cls.name: cls for cls in (SingleProcess, DistributedDataParallelStrategy,
                                         AsyncParameterServerStrategy, HogwildStrategy, LocalSGD,
                                         SparseAveraging, StaleGradients)}


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


def create_strategy(spec: str, options=None) -> Strategy:
    """Build a strategy object from its name (and optional ':argument') and the run's ParallelConfig."""
    _, argument = split_strategy_name(spec)
    return strategy_class(spec)(argument, options)


__all__ = ["Strategy", "WorkerContext", "create_strategy", "known_strategies", "strategy_class", "split_strategy_name"]
