"""`stale:DELAY`: one process whose gradients are DELAY optimizer steps old (a diagnostic).

Asynchronous training (`async`, `hogwild`) is fast because no worker waits, and
it pays for that in staleness: a worker's gradient was computed at parameters
that the other workers have updated since. With N equally fast workers each
gradient is about N-1 updates old. Whether a model tolerates that decides
whether async pays off, and it can be measured on one process, without any
of async's speed or noise: `stale:1` computes every step's gradient at the
parameters of one step earlier and applies it to the current ones. Everything
else (data order, optimizer, schedule) is `single`'s, and `stale:0` is `single`
exactly, so the difference between the two runs is the cost of staleness alone.

How: before each optimizer step the parameters are copied into a ring of DELAY
snapshots; each micro-step's forward and backward run with the oldest
snapshot swapped into the model (the first DELAY steps use the initial
parameters, as async workers that all start from them do), and the live values
are swapped back before the optimizer applies the gradient.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Iterator

import torch

from paratrain.errors import ConfigError
from paratrain.strategies.base import Strategy, WorkerContext

if TYPE_CHECKING:
    from paratrain.config import ParallelConfig


class StaleGradients(Strategy):
    """One process; each gradient is taken at the parameters of DELAY steps before."""

    name = "stale"
    diagnostic_only = True
    conformance_spec = "stale:1"
    description = ("diagnostic: one process whose gradients are DELAY steps old (stale:1), to measure what "
                   "asynchronous training's staleness costs a model")

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        self.delay = parse_delay(argument)
        self._store_options(options)
        self._params: list[torch.Tensor] = []
        self._snapshots: deque[list[torch.Tensor]] = deque()
        self._live: list[torch.Tensor] = []

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._live = [torch.empty_like(p) for p in self._params]
        return model

    @contextlib.contextmanager
    def sync_context(self, model: torch.nn.Module, sync: bool) -> Iterator[None]:
        if self.delay == 0 or not self._snapshots:
            yield
            return
        oldest = self._snapshots[0]
        with torch.no_grad():
            for param, live, old in zip(self._params, self._live, oldest):
                live.copy_(param)
                param.copy_(old)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, live in zip(self._params, self._live):
                    param.copy_(live)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        if self.delay > 0:
            self._remember_parameters()
        super().optimizer_step(optimizer, scaler)

    def _remember_parameters(self) -> None:
        """Push the parameters about to be updated; drop (and reuse) the snapshot that is now too old."""
        # DELAY snapshots are kept: after this push they are the parameters of
        # steps t-DELAY+1 .. t, so the next step's gradient is DELAY steps old.
        recycled = self._snapshots.popleft() if len(self._snapshots) == self.delay else None
        with torch.no_grad():
            if recycled is None:
                recycled = [p.detach().clone() for p in self._params]
            else:
                for buffer, param in zip(recycled, self._params):
                    buffer.copy_(param)
        self._snapshots.append(recycled)

    def state_dict(self) -> dict:
        # The snapshots are part of the state: a resumed run takes its next
        # gradients at the same old parameters as an uninterrupted one.
        return {"snapshots": [[t.clone() for t in snapshot] for snapshot in self._snapshots]}

    def load_state_dict(self, state: dict) -> None:
        snapshots = state.get("snapshots", [])
        self._snapshots = deque([[t.clone() for t in snapshot] for snapshot in snapshots][-self.delay:]
                                if self.delay > 0 else [])


def parse_delay(argument: str | None) -> int:
    """'1' -> 1; anything but an integer >= 0 is a ConfigError."""
    if argument is None:
        raise ConfigError("strategy='stale' needs a delay in optimizer steps, e.g. stale:1 "
                          "(each gradient taken at the parameters of 1 step earlier)")
    try:
        delay = int(argument)
    except ValueError:
        delay = -1
    if delay < 0:
        raise ConfigError(f"strategy='stale:{argument}': DELAY must be an integer >= 0 (optimizer steps), e.g. stale:1")
    return delay
