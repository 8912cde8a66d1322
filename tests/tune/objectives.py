"""Objectives the tune tests run, at module top level so that worker processes import them.

Run as a script it is a search of its own (for the tests that kill processes), of ``slow``:
    python -m tests.tune.objectives OUT TRIALS PARALLEL [STORAGE STUDY]
(the study in OUT/study.journal unless a STORAGE URL and STUDY name are given).
"""

from __future__ import annotations

import math
import sys
import time

import optuna

BRANIN_MINIMUM = 0.397887
BRANIN_MINIMA = ((-math.pi, 12.275), (math.pi, 2.275), (9.42478, 2.475))
BRANIN_SPACE = {"x": {"type": "float", "low": -5.0, "high": 10.0}, "y": {"type": "float", "low": 0.0, "high": 15.0}}
SLOW_SPACE = {"q": {"type": "float", "low": 0.0, "high": 1.0}}


def branin_value(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def branin(params: dict, trial) -> float:
    return branin_value(params["x"], params["y"])


def branin_and_distance(params: dict, trial) -> tuple[float, float]:
    """Two objectives: Branin, and the distance from the centre of the box."""
    return branin_value(params["x"], params["y"]), math.hypot(params["x"] - 2.5, params["y"] - 7.5)


def learning_curve(params: dict, trial) -> float:
    """A loss curve that settles at q: trials with a large q are clearly bad from the first step."""
    value = math.inf
    for step in range(1, 28):
        value = params["q"] + 1.0 / step
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


STEP_SECONDS = 0.2


def slow(params: dict, trial) -> float:
    """A few steps that take real time, so that a test can kill a worker in the middle of one."""
    value = math.inf
    for step in range(1, 6):
        time.sleep(STEP_SECONDS)
        value = params["q"] + 1.0 / step
        trial.report(value, step)
    return value


def main(argv: list[str]) -> int:
    from paratrain.tune import run_function_study

    out, trials, parallel = argv[0], int(argv[1]), int(argv[2])
    storage, study_name = (argv[3], argv[4]) if len(argv) > 4 else (None, None)
    study = run_function_study(slow, SLOW_SPACE, sampler="random", trials=trials, parallel=parallel, out=out,
                               storage=storage, study_name=study_name, verbosity=1)
    print(f"done {len(study.trials)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
