"""Ctrl-C and SIGTERM as one exception, held back while a checkpoint and its metrics line are written.

SIGTERM is what ``kill``, ``timeout``, Slurm and Kubernetes send. Python's default
ends the process at once, so no ``finally`` runs: workers are not stopped and
temporary files stay. Here SIGINT and SIGTERM both raise :class:`Interrupted`,
which carries the signal, so that the CLI can exit 130 or 143 as shells expect.

Inside :func:`deferred` a signal is only noted and raised when the block ends:
the training loop writes checkpoint.pt and then appends the epoch to
metrics.jsonl there, so an interruption never separates the two.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by ``signum`` (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


_state = threading.local()
_pending: list[int] = []  # signals noted inside a deferred block (handlers run on the main thread)
_raised = False  # one Interrupted per stop: a second signal must not break the clean-up of the first


def raise_interrupted(signum: int, frame: object) -> None:
    """Signal handler: raise Interrupted now, or at the end of the deferred block the main thread is in."""
    global _raised
    if _raised:
        return
    if getattr(_state, "depth", 0) > 0:
        _pending.append(signum)
        return
    _raised = True
    raise Interrupted(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold back SIGINT/SIGTERM (when handled here) until the block is done, then raise the first."""
    global _raised
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    except Exception as exc:
        # A failure inside the block (a peer that stopped on the same signal closes the
        # collective) still reports the signal that caused it.
        if _state.depth == 1 and _pending:
            signum = _pending[0]
            _pending.clear()
            _raised = True
            raise Interrupted(signum) from exc
        raise
    finally:
        _state.depth -= 1
    if _state.depth == 0 and _pending and threading.current_thread() is threading.main_thread():
        signum = _pending[0]
        _pending.clear()
        _raised = True
        raise Interrupted(signum)


def install() -> None:
    """Handle SIGINT and SIGTERM with :func:`raise_interrupted` in this process (call on the main thread)."""
    _rearm()
    for signum in SIGNALS:
        signal.signal(signum, raise_interrupted)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise Interrupted, unless the program installed handlers of its own.

    For library callers (``fit()`` in a user's script): only default handlers are
    replaced, and they are put back afterwards. Off the main thread nothing changes.
    """
    replaced = {}
    if threading.current_thread() is threading.main_thread():
        _rearm()
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current in (signal.SIG_DFL, signal.default_int_handler):
                replaced[signum] = current
                signal.signal(signum, raise_interrupted)
    try:
        yield
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)


def _rearm() -> None:
    """A new run may be interrupted again (a library caller may have caught the last Interrupted)."""
    global _raised
    _raised = False
    _pending.clear()


def exit_status(exc: BaseException) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)
