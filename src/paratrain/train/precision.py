"""Mixed precision as a small object: an autocast context and an optional gradient scaler.

bf16 autocast on CPU is only fast where the CPU has native bf16 instructions
(AVX512-BF16 or AMX). Without them it is emulated and many times slower than
fp32, so we warn the user with that reason instead of silently slowing down.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager

import torch

from paratrain.errors import ConfigError

log = logging.getLogger("paratrain")

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists avx512_bf16 or amx_bf16 (Linux); False when unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class Precision:
    """Autocast settings for one device."""

    name: str
    device: torch.device

    def __post_init__(self) -> None:
        if self.name == "fp16" and self.device.type != "cuda":
            raise ConfigError("precision='fp16' needs a CUDA device (autocast with a gradient scaler); use bf16 on CPU")
        if self.name == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            log.warning(
                "precision=bf16 on a CPU without native bf16 (no avx512_bf16/amx_bf16): "
                "autocast emulates it and is typically 20-40x slower than fp32; use --precision fp32"
            )

    def autocast(self) -> ContextManager:
        """Context for the forward pass and loss."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.name])

    def make_scaler(self) -> "torch.amp.GradScaler | None":
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        if self.name == "fp16":
            return torch.amp.GradScaler("cuda")
        return None
