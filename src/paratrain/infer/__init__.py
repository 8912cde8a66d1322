"""Fast inference for trained runs: ONNX export and int8 quantization (ONNX Runtime).

- ``onnx_export.py``: model.onnx and its encoding documents (model.onnx.json, model.onnx.md).
- ``quantize.py``: model.int8.onnx, dynamic or static (calibrated) int8; why ONNX Runtime.
- ``calibration.py``: the training rows static quantization calibrates on.
- ``runtime.py``: loading the int8 model for ``predict --quantized``.
- ``deps.py``: the optional packages, imported late; ``cli.py``: ``quantize`` and ``export``.

Needs ``pip install 'paratrain[quant]'``; the packages are imported only when a function
runs, and a missing one is a one-line error naming that extra. Names here load lazily, so
that building the command line imports neither torch nor onnx.

Example:
    >>> from paratrain.infer import QuantizeOptions, export_onnx, quantize_run
    >>> export_onnx("runs/my-run")  # doctest: +SKIP
    >>> quantize_run("runs/my-run", QuantizeOptions(mode="dynamic"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_onnx": "paratrain.infer.onnx_export",
    "MODES": "paratrain.infer.quantize",
    "QuantizeOptions": "paratrain.infer.quantize",
    "quantize_run": "paratrain.infer.quantize",
    "Int8Model": "paratrain.infer.runtime",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'paratrain.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
