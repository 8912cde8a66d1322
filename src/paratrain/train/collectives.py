"""Name the collective that could not complete: a peer gone or a link cut becomes one line.

When a worker dies or the network between machines is cut, gloo fails with a low-level
message ("Connection closed by peer", "Timed out waiting 10000ms for recv operation") that
does not say which of paratrain's steps was waiting, nor which setting bounds the wait. The
training loop wraps its few collective points (the training step's gradient synchronisation,
the epoch's metrics all-reduce, validation, checkpoint, the final barrier) in
:func:`collective`, which turns such a failure into a :class:`CollectiveError` naming the
rank, the step and ``--timeout``. Other errors pass through unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from paratrain.errors import CollectiveError

_TRANSPORT_SIGNS = (
    "gloo",
    "nccl",
    "connection closed by peer",
    "connection reset",
    "connection refused",
    "broken pipe",
    "timed out",
    "socket timeout",
    "timeout",
)
"""Words of the messages gloo, NCCL and the TCP store give when a peer or the link is gone
(seen on gloo: "[.../gloo/transport/tcp/pair.cc:553] Connection closed by peer",
"[.../unbound_buffer.cc:129] Timed out waiting 10000ms for recv operation to complete")."""


def is_transport_failure(exc: BaseException) -> bool:
    """True for an error of the process group's transport (a peer or the network), not of the model.

    torch raises these as ``torch.distributed.DistError`` subclasses or as a plain RuntimeError
    whose text comes from gloo; a RuntimeError of the model (a shape mismatch) has none of the words.
    A sharded checkpoint's CheckpointException (a BaseException) carries each rank's failure.
    """
    return _transport_cause(exc) is not None


def _transport_cause(exc: BaseException) -> BaseException | None:
    """The transport failure ``exc`` is or carries (a CheckpointException's per-rank failures), or None."""
    failures = getattr(exc, "failures", None)
    if isinstance(failures, dict):
        for failure in failures.values():
            inner = failure[0] if isinstance(failure, tuple) and failure else failure
            if isinstance(inner, BaseException) and _transport_cause(inner) is not None:
                return inner
        return None
    if _is_transport_error(exc):
        return exc
    return None


def _is_transport_error(exc: BaseException) -> bool:
    try:
        import torch.distributed as dist

        if isinstance(exc, dist.DistError):
            return True
    except (ImportError, AttributeError):  # torch built without distributed
        pass
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(sign in text for sign in _TRANSPORT_SIGNS)


@contextlib.contextmanager
def collective(what: str, rank: int, timeout_s: float) -> Iterator[None]:
    """Within the block, a transport failure becomes a CollectiveError naming ``what``.

    Example:
        >>> with collective("epoch metrics all_reduce", rank=0, timeout_s=20):  # doctest: +SKIP
        ...     strategy.all_reduce_sum(totals)
    """
    try:
        yield
    except CollectiveError:
        raise  # named already, by an inner block
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # CheckpointException derives from BaseException
        cause = _transport_cause(exc)
        if cause is None:
            raise
        raise CollectiveError(collective_message(what, rank, timeout_s, cause)) from exc


def collective_message(what: str, rank: int, timeout_s: float, exc: BaseException) -> str:
    """'rank 1: <what> did not complete within --timeout 20 s: ...', with the transport's own first line."""
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"rank {rank}: {what} did not complete within --timeout {timeout_s:g} s: a peer is gone or "
            f"unreachable (a worker died, or the network between machines is cut); the transport said: {cause}. "
            "Restart the job (from the last checkpoint with fit --resume, or let torchrun --max-restarts do it); "
            "raise --timeout if the peers are only slow")
