"""Strict JSON: NaN and infinity become null, so every file and printout parses anywhere.

Python's ``json`` writes ``NaN`` and ``Infinity`` as bare tokens that strict parsers
(JavaScript, jq, most other languages) refuse. No torch here: the CLI imports it at once.
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None, recursively.

    JSON has no NaN or Infinity: Python writes them as bare tokens that strict parsers
    (JavaScript, jq, most other languages) refuse. None becomes ``null``.

    Example:
        >>> json_safe({"r2": float("nan"), "losses": [1.0, float("inf")]})
        {'r2': None, 'losses': [1.0, None]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` that refuses any non-finite float left over."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)
