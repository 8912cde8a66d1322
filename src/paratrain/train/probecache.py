"""A small on-disk cache of precision probes, so that a second fit does not probe again.

One JSON file per key (CPU model, torch version, device, model shape, batch size,
threads, optimizer), written atomically: parallel search trials that probe the same
model at once each write a whole file, and a reader never sees half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch

from paratrain.train.checkpoint import save_json_atomic

log = logging.getLogger("paratrain")

CACHE_ENV = "PARATRAIN_CACHE_DIR"
FORMAT = 1
"""Bumped when what a cached probe means changes, so that old files are ignored."""


def cache_dir() -> Path:
    """$PARATRAIN_CACHE_DIR, else $XDG_CACHE_HOME/paratrain, else ~/.cache/paratrain."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "paratrain"
    return Path.home() / ".cache" / "paratrain"


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def probe_key(model: torch.nn.Module, device: torch.device, batch_size: int, threads: int,
              optimizer: str) -> dict[str, Any]:
    """What a probe's timings depend on. The model enters by its layers and their shapes
    (its repr lists them), not by its weights."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {
        "format": FORMAT,
        "device": device.type,
        "device_model": device_name,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "model": repr(model),
        "batch_size": int(batch_size),
        "threads": int(threads),
        "optimizer": optimizer,
    }


def _path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir() / f"precision-probe-{digest}.json"


def load(key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached probe for ``key``, or None (absent, unreadable, or another key's file)."""
    path = _path(key)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(stored, dict) or stored.get("key") != key or not isinstance(stored.get("probe"), dict):
        return None
    return stored["probe"]


def store(key: dict[str, Any], probe: dict[str, Any]) -> Path | None:
    """Save a probe; a cache that cannot be written costs a probe next time, not the run."""
    path = _path(key)
    try:
        save_json_atomic({"key": key, "probe": probe}, path)
    except OSError as exc:
        log.debug("precision probe not cached at %s: %s", path, exc)
        return None
    return path
