"""Pictures of a fit: data and curve for one variable, predicted vs observed for several."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from paratrain.curvefit.problem import build_problem
from paratrain.errors import ConfigError

__all__ = ["plot_fit"]


def plot_fit(curves: Mapping[str, tuple[str, Mapping[str, float]]], frame: pd.DataFrame, target: str,
             path: str | Path) -> Path:
    """Draw the data and each fitted curve; save a PNG (or any format matplotlib knows by suffix).

    Args:
        curves: Label -> (formula, fitted parameters); the first one sets the axes.
        frame: The fitted table.
        target: Response column or expression.
        path: Output file.

    Raises:
        ConfigError: matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot needs matplotlib; install it with: pip install matplotlib") from None
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    first_formula = next(iter(curves.values()))[0]
    problem = build_problem(first_formula, frame, target)
    variables = problem.model.variables
    observed = problem.data.y[0].numpy()
    if len(variables) == 1:
        x = problem.data.X[0, :, 0].numpy()
        ax.scatter(x, observed, s=12, color="0.35", label="data", zorder=3)
        grid = np.linspace(x.min(), x.max(), 400)
        for label, (formula, params) in curves.items():
            ax.plot(grid, _evaluate(formula, params, {variables[0]: grid}, len(grid)), lw=2, label=label)
        ax.set_xlabel(variables[0])
        ax.set_ylabel(target)
    else:
        for label, (formula, params) in curves.items():
            columns = {name: frame[name].to_numpy(dtype=float) for name in variables}
            ax.scatter(observed, _evaluate(formula, params, columns, len(observed)), s=12, label=label)
        low, high = float(observed.min()), float(observed.max())
        ax.plot([low, high], [low, high], color="0.5", lw=1, ls="--", label="y = x")
        ax.set_xlabel(f"observed {target}")
        ax.set_ylabel(f"predicted {target}")
    ax.set_title(first_formula if len(curves) == 1 else "best fits", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _evaluate(formula: str, params: Mapping[str, float], columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    from paratrain.models.formula import parse_formula

    env = {name: torch.tensor(float(v), dtype=torch.float64) for name, v in params.items()}
    env.update({name: torch.as_tensor(np.asarray(v, dtype=float)) for name, v in columns.items()})
    with np.errstate(all="ignore"):
        return torch.broadcast_to(parse_formula(formula).evaluate(env), (n,)).numpy()
