"""Optuna samplers and pruners by name: the one place names become objects.

Every worker process builds its own sampler from the same name and options, so
nothing but names and numbers is stored in the study. Seeds differ per worker
(see :func:`worker_seed`): two workers with one seed would propose the same
points. Grid and QMC samplers coordinate through the storage instead and keep
the study's seed.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any, Mapping

from paratrain.errors import ConfigError
from paratrain.tune.space import SearchSpace

SAMPLERS = {
    "grid": "every combination of a grid (continuous ranges get grid_points values)",
    "random": "independent uniform draws",
    "tpe": "Tree-structured Parzen Estimator (multivariate, constant liar for parallel trials)",
    "gp": "Gaussian-process Bayesian optimization",
    "cmaes": "CMA-ES evolution strategy (continuous parameters; others drawn at random)",
    "nsga2": "NSGA-II genetic algorithm, for several objectives (e.g. val_loss and seconds)",
    "qmc": "quasi-Monte Carlo (Sobol) low-discrepancy points",
}
PRUNERS = {
    "asha": "asynchronous successive halving: rungs at epochs/9 and epochs/3 keep the best third",
    "hyperband": "several successive-halving brackets of different aggressiveness",
    "median": "stop a trial worse than the median of earlier trials at the same epoch",
    "none": "never stop a trial early",
}
DEFAULT_GRID_POINTS = 4
"""Values per continuous parameter in a grid search, unless sampler_options says otherwise."""


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise ConfigError(f"sampler={name!r} is not one of: {', '.join(SAMPLERS)}")


def check_pruner(name: str) -> None:
    if name not in PRUNERS:
        raise ConfigError(f"pruner={name!r} is not one of: {', '.join(PRUNERS)}")


def worker_seed(seed: int, worker: str) -> int:
    """A seed per (study seed, worker): stable for a worker, different between workers."""
    digest = hashlib.sha256(f"{seed}:{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def build_sampler(name: str, space: SearchSpace, seed: int, n_objectives: int = 1,
                  trials: int = 64, options: Mapping[str, Any] | None = None, worker: str = "0") -> Any:
    """The Optuna sampler ``name``; ``options`` are passed on to its constructor.

    ``worker`` names the process that builds it: random, TPE, GP, CMA-ES and NSGA-II get a
    seed of their own per worker.
    """
    import optuna

    check_sampler(name)
    options = dict(options or {})
    own_seed = worker_seed(seed, worker)
    _quiet_experimental_warnings()
    if name == "grid":
        points = int(options.pop("grid_points", DEFAULT_GRID_POINTS))
        return optuna.samplers.GridSampler(space.grid(points), seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=own_seed, **options)
    if name == "tpe":
        # multivariate+group model parameters jointly, conditional ones too;
        # constant_liar keeps parallel workers from proposing the same point.
        defaults = {"multivariate": True, "group": True, "constant_liar": True}
        return optuna.samplers.TPESampler(seed=own_seed, **{**defaults, **options})
    if name == "gp":
        return optuna.samplers.GPSampler(seed=own_seed, **options)
    if name == "cmaes":
        if n_objectives > 1:
            raise ConfigError("sampler='cmaes' optimizes one objective; use nsga2 or tpe for several")
        _require("cmaes", "sampler='cmaes'")
        return optuna.samplers.CmaEsSampler(seed=own_seed, **options)
    if name == "nsga2":
        # A population of 50 would spend a 64-trial budget on one generation.
        options.setdefault("population_size", max(8, min(50, trials // 5)))
        return optuna.samplers.NSGAIISampler(seed=own_seed, **options)
    # Scrambled with the study seed: every worker walks the same sequence, indexed through the storage.
    return optuna.samplers.QMCSampler(**{"seed": seed, "qmc_type": "sobol", "scramble": True, **options})


def build_pruner(name: str, max_resource: int | None = None, options: Mapping[str, Any] | None = None) -> Any:
    """The Optuna pruner ``name``; resources are epochs (``max_resource``: the most a trial runs)."""
    import optuna

    check_pruner(name)
    options = dict(options or {})
    if name == "asha":
        # Rungs at E/9, E/3 (and E) epochs: each keeps the best third. More rungs (from epoch 1)
        # would let about 1 trial in 3**5 finish a 100-epoch run: too few to learn from.
        min_resource = max(1, max_resource // 9) if max_resource else 1
        return optuna.pruners.SuccessiveHalvingPruner(**{"min_resource": min_resource, "reduction_factor": 3,
                                                          **options})
    if name == "hyperband":
        defaults = {"min_resource": 1, "max_resource": max_resource or "auto", "reduction_factor": 3}
        return optuna.pruners.HyperbandPruner(**{**defaults, **options})
    if name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 1, **options})
    return optuna.pruners.NopPruner()


def _require(module: str, what: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{what} needs the '{module}' package: pip install {module}")


def _quiet_experimental_warnings() -> None:
    """TPE's multivariate/group and the matplotlib plots are 'experimental' in Optuna: known, not news."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
