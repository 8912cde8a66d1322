"""The optional packages of ONNX export and int8 inference, imported only when used."""

from __future__ import annotations

import importlib
import logging
from contextlib import contextmanager
from types import ModuleType
from typing import Iterator

from paratrain.errors import ConfigError

EXTRA = "quant"
"""The pyproject extra that installs what this package needs."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or fail with one line that names the extra to install.

    Args:
        module: Dotted module name, e.g. ``"onnxruntime"``.
        purpose: What needs it, for the message ("ONNX export").

    Raises:
        ConfigError: The package is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs the package '{module.split('.')[0]}', which is not installed ({exc}); "
            f"install it with: pip install 'paratrain[{EXTRA}]'"
        ) from None


@contextmanager
def quiet_root_warnings() -> Iterator[None]:
    """Hide warnings that onnxruntime's quantizer logs on the root logger.

    Why: it advises "pre-processing" (shape inference for convolutions) on every call; an MLP
    gains nothing from it, and a user reading the output cannot act on it.
    """
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
