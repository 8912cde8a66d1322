"""Atomic file writes, so that a crash never leaves a half-written checkpoint or result."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from paratrain.train.jsonsafe import dumps_strict, json_safe  # noqa: F401 - re-exported: one place to import from

TEMP_SUFFIX = ".tmp"
"""Temp files of the atomic writer are named ``.<name>.<random>.tmp`` beside their target."""


def _read_umask() -> int:
    """The process umask, without changing it.

    ``os.umask(0); os.umask(old)`` would briefly leave the umask at 0, which a thread
    creating a file at that moment would see; Linux shows the value in /proc instead.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


# Read once, at import, while no other thread of ours creates files.
_UMASK = _read_umask()
FILE_MODE = 0o666 & ~_UMASK
"""Mode of every file written here: what open() would give under the user's umask."""


def _atomic_write(path: Path, write) -> None:
    # Write to a temp file in the same directory, flush it to disk, then rename:
    # rename is atomic on POSIX, so readers see the old file or the new one.
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            # mkstemp makes the file 0600; the result must be readable as the user's umask
            # says, like any file open() writes (metrics.jsonl is written that way).
            os.fchmod(handle.fileno(), FILE_MODE)
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
