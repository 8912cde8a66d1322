"""Nonlinear least squares for formula models: batched multi-start Levenberg-Marquardt.

Public entry points: :func:`curve_fit` (one fit), :func:`fit_groups` (the same
formula on every group of a table, in one batch) and :func:`fit_families`
(built-in model families ranked by cross-validation and AIC/BIC). The command
line is ``paratrain curvefit`` (:mod:`paratrain.curvefit.cli`).

Example:
    >>> import numpy as np
    >>> from paratrain.curvefit import curve_fit
    >>> x = np.linspace(0, 10, 40)
    >>> fit = curve_fit("b1*(1-exp(-b2*x))", x=x, y=5 * (1 - np.exp(-0.3 * x)), p0=[1, 0.1], starts=16)
    >>> round(fit.params["b2"], 6)
    0.3
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "curve_fit": "paratrain.curvefit.fit",
    "CurveFitWarning": "paratrain.curvefit.fit",
    "IdentifiabilityError": "paratrain.curvefit.fit",
    "CurveFitResult": "paratrain.curvefit.result",
    "fit_groups": "paratrain.curvefit.groups",
    "fit_families": "paratrain.curvefit.families",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # Lazy, like paratrain/__init__: `paratrain --help` must not import torch.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'paratrain.curvefit' has no attribute {name!r}")
