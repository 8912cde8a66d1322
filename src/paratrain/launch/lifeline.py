"""Child processes that end with their parent.

A parent killed with SIGKILL (the OOM killer, ``kill -9``, a scheduler's hard
stop) runs no cleanup: its workers would be re-parented and train on, writing
into a run directory that a resumed run may already use. So a child asks the
kernel for SIGTERM when its parent goes (Linux ``PR_SET_PDEATHSIG``) and also
polls its parent's pid, which works everywhere and catches the race where the
parent died before the request was made.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not the
process: the launchers start workers from the thread that then waits for them,
so that thread lives as long as the workers do.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def request_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent ends; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def stop_with_parent(parent_pid: int, signum: int = signal.SIGTERM, poll_seconds: float = 0.2,
                     exit_after: float | None = None) -> None:
    """Send ``signum`` to this process as soon as ``parent_pid`` is no longer its parent.

    ``exit_after``: seconds to let the signal's handler stop the process cleanly
    before it is ended with ``os._exit(128 + signum)`` (None: never forced).
    """
    request_parent_death_signal(signum)

    def watch() -> None:
        # Checked after the request above: a parent that died before it was made is seen here.
        while os.getppid() == parent_pid:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signum)
        if exit_after is not None:
            time.sleep(exit_after)
            os._exit(128 + int(signum))

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parent_is_gone(parent_pid: int) -> bool:
    """True once this process was re-parented (its parent ended)."""
    return os.getppid() != parent_pid


def exit_now(status: int) -> None:
    """End this process at once, after flushing logs and output.

    A worker's work is done (results written, process group left): tearing down torch's
    interpreter state can take seconds on a loaded machine (measured: 4-5 s of 2 cores), and
    the static destructors of gloo's threads sometimes abort a finished rank ("terminate
    called without an active exception", seen under torchrun), which turns a good run into a
    failed one."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
