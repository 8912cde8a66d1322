"""One writer per run directory: a lock held for the life of a run.

Two processes training into one directory interleave their epochs in
metrics.jsonl and overwrite each other's checkpoints. So the process that
dispatches a run (the CLI or ``fit()`` caller, rank 0 under torchrun) holds an
exclusive ``flock`` on ``RUN_DIR/.lock`` until the run ends; a second ``fit
--resume`` on that directory fails at once, naming the process that holds it.

The lock belongs to an open file, not to a process: the local launcher passes
the descriptor on to its workers, so the directory stays locked until the
last of them is gone, even if the parent was killed first. The kernel drops
it when the last descriptor closes, so a crash never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from paratrain.errors import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory; ``fd`` is the descriptor that holds it."""

    def __init__(self, run_dir: Path, fd: int) -> None:
        self.run_dir = run_dir
        self.fd = fd


def acquire(run_dir: str | os.PathLike) -> RunLock:
    """Lock ``run_dir`` for this process, or raise ConfigError naming the holder."""
    import fcntl

    run_dir = Path(run_dir)
    path = run_dir / LOCK_FILE
    # Private, unlike the run's outputs: another user who could open it could also take the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise ConfigError(
            f"run directory '{run_dir}' is in use by {who} (it holds {path}); "
            "wait for that run to end or stop it, then try again"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for the message above; the lock itself does not depend on this text.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return RunLock(run_dir, fd)


def release(lock: RunLock) -> None:
    """Give the lock up (workers that inherited it keep it until they exit)."""
    with contextlib.suppress(OSError):
        os.ftruncate(lock.fd, 0)
    os.close(lock.fd)


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike, lock: bool = True) -> Iterator[RunLock | None]:
    """Hold ``run_dir``'s lock within the block (``lock=False``: another process holds it).

    An interruption (Ctrl-C, SIGTERM) that passes through is tagged with
    ``run_dir``, so that the CLI can print the command that resumes it.
    """
    held = acquire(run_dir) if lock else None
    try:
        yield held
    except KeyboardInterrupt as exc:
        exc.run_dir = Path(run_dir)  # type: ignore[attr-defined]
        raise
    finally:
        if held is not None:
            release(held)
