"""Atomic file writes, so that a crash never leaves a half-written checkpoint or result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from paratrain.train.jsonsafe import dumps_strict, json_safe  # noqa: F401 - re-exported: one place to import from


def _atomic_write(path: Path, write) -> None:
    # Write to a temp file in the same directory, flush it to disk, then rename:
    # rename is atomic on POSIX, so readers see the old file or the new one.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    """torch.save through a temp file and a rename."""
    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def save_json_atomic(obj: Any, path: str | os.PathLike) -> None:
    """Strict JSON (non-finite floats as null) through a temp file and a rename."""
    text = dumps_strict(obj, indent=2) + "\n"
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def save_bytes_atomic(data: bytes, path: str | os.PathLike) -> None:
    """Bytes through a temp file and a rename."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def save_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Text through a temp file and a rename."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def load_torch(path: str | os.PathLike) -> Any:
    """Load a checkpoint or model file; weights_only so that a file cannot run code."""
    return torch.load(path, map_location="cpu", weights_only=True)
