"""The one place bench asks the cost model for a step time.

The cost model (``paratrain.costmodel``) may be absent from an installation; a row then has no
prediction (null), and the report says why, instead of failing the measurement.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


def predicted_step_s(calibration_file: str | None, contender: str, workers: int,
                     link: str | None) -> tuple[float | None, str | None]:
    """(predicted seconds per optimizer step, None) or (None, why there is none)."""
    if calibration_file is None:
        return None, "no --calibration given"
    try:
        from paratrain.costmodel import load_calibration, predict_step
    except ImportError as error:
        return None, f"the cost model is not available here ({error})"
    from paratrain.launch.links import parse_link

    try:
        calibration = _load(calibration_file, load_calibration)
        prediction = predict_step(calibration, contender, workers, parse_link(link or "loopback"))
    except Exception as error:  # a prediction must never cost the measurements: report it instead
        return None, f"no prediction for {contender} x{workers}: {error}"
    return float(prediction.step_s), None


@lru_cache(maxsize=4)
def _load_cached(path: str, loader: Any) -> Any:
    return loader(path)


def _load(path: str, loader: Any) -> Any:
    return _load_cached(str(path), loader)
