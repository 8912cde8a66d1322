"""Load the int8 model that `paratrain quantize` wrote, refusing one that is stale or incomplete."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from paratrain.errors import ConfigError
from paratrain.infer.onnx_export import run_session, session
from paratrain.train import rundir

INFO_FORMAT = "paratrain.int8"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Int8Model:
    """An ONNX Runtime session of ``model.int8.onnx``; call it on encoded features.

    Example:
        >>> int8 = Int8Model.load("runs/my-run")  # doctest: +SKIP
        >>> int8(features).shape  # doctest: +SKIP
        (100, 1)
    """

    session: Any
    info: dict[str, Any]

    @classmethod
    def load(cls, run_dir: str | os.PathLike, threads: int | None = None) -> "Int8Model":
        """Raises ConfigError naming the command that (re)makes the int8 model."""
        run_dir = Path(run_dir)
        remake = f"make it with: paratrain quantize --run {run_dir} --mode dynamic (or static)"
        info_path, model_path = run_dir / rundir.INT8_INFO_FILE, run_dir / rundir.INT8_FILE
        if not info_path.is_file():
            raise ConfigError(f"'{run_dir}' holds no quantized model ({rundir.INT8_INFO_FILE}); {remake}")
        try:
            info = json.loads(info_path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"'{info_path}' is not readable JSON ({exc}); {remake}") from None
        if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
            raise ConfigError(f"'{info_path}' is not a paratrain int8 description; {remake}")
        if not model_path.is_file() or file_sha256(model_path) != info.get("int8_sha256"):
            raise ConfigError(f"'{model_path}' is missing or does not match {rundir.INT8_INFO_FILE} "
                              f"(an interrupted quantize?); {remake}")
        if file_sha256(run_dir / rundir.MODEL_FILE) != info.get("model_sha256"):
            raise ConfigError(f"{rundir.MODEL_FILE} in '{run_dir}' changed after it was quantized (a resumed run?): "
                              f"the int8 model is stale; {remake}")
        return cls(session(model_path, threads), info)

    @property
    def mode(self) -> str:
        return str(self.info.get("mode"))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """Raw outputs (standardized target or logits), float32, one row per row of ``features``."""
        return run_session(self.session, features)
