"""`sparse:RATIO`: sparse model averaging - each step, every worker shares the top-k of its unshared update.

Why this exists beside ``ddp --compress topk:RATIO``: that hook sparsifies the
*gradient* and keeps the rest as error feedback. With Adam at RATIO = 1% a
coordinate's residual reaches the optimizer only every ~100 steps, as one
large gradient, and training spikes (the README's strategy table shows it).
Here the error feedback is on the *update* instead, and it stays in the
worker's own model, as in DGC's local accumulation (Lin et al., 2018) and
CSER (Xie et al., 2020):

* every worker keeps a copy ``shared`` of the consensus parameters (equal on
  all workers) and trains its own model ``x = shared + residual``;
* it takes an ordinary optimizer step on its own batch (its own Adam state sees
  its true gradients, never a delayed burst);
* it all-gathers the k = ceil(RATIO * n) largest entries of ``x - shared`` as
  (index, value) pairs, adds the mean of every worker's pairs to ``shared``, and
  keeps the rest of its update (the residual) in ``x``.

So a worker always computes gradients where its own updates have taken it, and
what it has not yet shared cannot pile up into a jump. Each worker sends 8k
bytes per step (int32 index + float32 value): 50x fewer than dense all-reduce
at RATIO = 0.01. The exchange runs while the next step computes, so the other
workers' shares arrive one step later (``overlap=False`` waits instead; with
RATIO = 1 and SGD that is exactly synchronous SGD, which
tests/strategies/test_sparse.py checks).

Between steps the workers' models differ by their residuals (as in local SGD):
each epoch's validation sums every worker's model on its own rows, and when
training ends the models are averaged, so the saved model is the consensus.
Every rank checkpoints its own model, optimizer, the shared copy and the
exchange in flight (``replicas_differ``), so a resumed run continues exactly;
if a rank's own checkpoint is missing, every worker restarts from rank 0's
model with empty residuals. ``error_feedback=False`` (ablation) drops the
unsent part instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from paratrain.errors import ConfigError
from paratrain.strategies.base import ByteMeter, CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.collectives import all_ranks_resume_their_own, all_reduce_mean_, broadcast_
from paratrain.strategies.options import StrategyOptions, check_flag_option
from paratrain.strategies.topk import largest_magnitude

if TYPE_CHECKING:
    from paratrain.config import ParallelConfig


@dataclass(frozen=True)
class SparseOptions(StrategyOptions):
    """sparse's settings."""

    overlap: bool = True
    """Exchange each step's top-k while the next step computes (the other workers' shares arrive one
    step later); False waits every step (RATIO 1 is then exactly synchronous)."""
    error_feedback: bool = True
    """Keep the unsent part of each update in the worker's model; False drops it (ablation)."""

    def __post_init__(self) -> None:
        check_flag_option("overlap", self.overlap)
        check_flag_option("error_feedback", self.error_feedback)


class SparseAveraging(ProcessGroupStrategy):
    """Workers step alone; every step each shares the largest RATIO of its unshared parameter change."""

    name = "sparse"
    bench_specs = ("sparse:0.01",)
    description = ("sparse model averaging: every step each worker shares the largest RATIO of its unshared "
                   "update (sparse:0.01)")
    replicas_differ = True
    Options = SparseOptions
    conformance_spec = "sparse:0.05"
    selects_by_magnitude = True  # the top-k of each step's update

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        self.ratio = parse_ratio(argument)
        self._store_options(options)
        self.error_feedback = self.own_options.error_feedback
        # Without error feedback the unsent part is dropped when the exchange is applied,
        # which must then happen in the same step (an overlapped one would drop the next update).
        self.overlap = self.own_options.overlap and self.error_feedback
        self._pending: tuple | None = None
        self._world_size = 1
        self._params: list[torch.Tensor] = []
        self._buffers: list[torch.Tensor] = []
        self._flat = torch.empty(0)
        self._shared = torch.empty(0)
        self._unshared = torch.empty(0)
        self._magnitude = torch.empty(0)
        self._k = 1
        self._generator: torch.Generator | None = None
        self._meter = ByteMeter()
        self._rank = 0
        self._loaded: dict = {}

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        self._world_size = ctx.world_size
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._buffers = [b for b in model.buffers() if b.is_floating_point()]
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise ConfigError(f"strategy='sparse:{self.ratio:g}' needs parameters of one dtype, "
                              f"got {sorted(map(str, dtypes))}")
        self._rank = ctx.rank
        own = all_ranks_resume_their_own(self._loaded.get("rank"), ctx)
        if not own:  # a fresh run, or a rank without its own checkpoint: everyone from rank 0's model
            broadcast_(list(model.parameters()) + list(model.buffers()), src=0)
        # The parameters become views into one flat vector, so that the update,
        # the top-k and the residual are single vector operations. The optimizer
        # holds the same Parameter objects, so it steps the flat vector.
        total = sum(p.numel() for p in self._params)
        if total == 0:
            raise ConfigError(f"strategy='sparse:{self.ratio:g}' needs a model with trainable parameters")
        self._flat = torch.empty(total, dtype=dtypes.pop(), device=ctx.device)
        offset = 0
        for param in self._params:
            view = self._flat[offset : offset + param.numel()]
            view.copy_(param.detach().reshape(-1))
            param.data = view.view_as(param)
            offset += param.numel()
        self._shared = self._flat.clone()
        self._unshared = torch.empty_like(self._flat)
        self._magnitude = torch.empty_like(self._flat)
        self._k = max(1, math.ceil(self.ratio * total))
        self._index_dtype = torch.int32 if total < 2**31 else torch.int64
        # Its own generator: the top-k's sampling must not move the training's random stream.
        self._generator = torch.Generator(device=ctx.device)
        self._generator.manual_seed(1_000_003 + ctx.rank)
        if own:
            self._restore(self._loaded, ctx.device)
        self._loaded = {}
        return model

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        super().optimizer_step(optimizer, scaler)
        # The previous step's exchange ran while this step computed; apply it first,
        # so that nothing is in flight when this step chooses what to send.
        self._finish_exchange()
        unshared = torch.sub(self._flat, self._shared, out=self._unshared)
        index = largest_magnitude(unshared, self._k, self._generator, workspace=self._magnitude)
        self._start_exchange(index, unshared[index])
        self._meter.steps += 1
        if not self.overlap:
            self._finish_exchange()

    def _start_exchange(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Start all-gathering every worker's (index, value) pairs; ``_finish_exchange`` applies them."""
        wire_index = index.to(self._index_dtype)
        if values.element_size() == wire_index.element_size():
            # One message: the values' bits travel as integers beside the indices.
            payloads = [torch.cat([wire_index, values.view(wire_index.dtype)])]
        else:
            payloads = [wire_index, values]
        gathered = [[torch.empty_like(payload) for _ in range(self._world_size)] for payload in payloads]
        works = [dist.all_gather(out, payload, async_op=True) for out, payload in zip(gathered, payloads)]
        self._meter.bytes_sent += sum(payload.numel() * payload.element_size() for payload in payloads)
        self._pending = (works, gathered, index, values)

    def _finish_exchange(self) -> None:
        """Wait for the exchange in flight, if any, and add its mean to the shared copy and the model."""
        if self._pending is None:
            return
        works, gathered, index, values = self._pending
        self._pending = None
        for work in works:
            work.wait()
        if len(gathered) == 1:
            pairs = [(g[: self._k].long(), g[self._k :].view(values.dtype)) for g in gathered[0]]
        else:
            pairs = [(i.long(), v) for i, v in zip(*gathered)]
        share = 1.0 / self._world_size
        for other_index, other_values in pairs:
            self._shared.index_add_(0, other_index, other_values, alpha=share)
        if self.error_feedback:
            # x = shared + residual: move x by what shared gained, less what this worker gave away.
            self._flat.index_add_(0, index, values, alpha=-1.0)
            for other_index, other_values in pairs:
                self._flat.index_add_(0, other_index, other_values, alpha=share)
        else:
            self._flat.copy_(self._shared)

    def state_dict(self) -> dict:
        # The exchange in flight belongs to the next step: keep what it received, not the
        # request, so that a resumed run applies it where an uninterrupted one would.
        pending = None
        if self._pending is not None:
            works, gathered, index, values = self._pending
            for work in works:
                work.wait()
            pending = {"gathered": [[t.cpu() for t in group] for group in gathered], "index": index.cpu(),
                       "values": values.cpu()}
        return {"rank": self._rank, "shared": self._shared.detach().clone().cpu(), "pending": pending,
                "generator": self._generator.get_state() if self._generator is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self._loaded = dict(state or {})

    def _restore(self, state: dict, device: torch.device) -> None:
        """The shared copy and the exchange in flight of this rank's own checkpoint."""
        self._shared.copy_(state["shared"])
        if state.get("generator") is not None and self._generator is not None:
            self._generator.set_state(state["generator"])
        pending = state.get("pending")
        if pending is not None:
            gathered = [[t.to(device) for t in group] for group in pending["gathered"]]
            self._pending = ([], gathered, pending["index"].to(device), pending["values"].to(device))

    def synchronize_model(self, model: torch.nn.Module) -> bool:
        self._finish_exchange()
        # Training ends: average the workers' models (each is shared + its residual),
        # so that the saved model is the consensus rather than rank 0's.
        self._meter.bytes_sent += all_reduce_mean_([self._flat] + self._buffers, self._world_size)
        self._shared.copy_(self._flat)
        return True

    def communication_stats(self) -> CommStats | None:
        return self._meter.take(self._flat.numel() * self._flat.element_size())


def parse_ratio(argument: str | None) -> float:
    """'0.01' -> 0.01; anything but a number in (0, 1] is a ConfigError."""
    if argument is None:
        raise ConfigError("strategy='sparse' needs a ratio, e.g. sparse:0.01 (share the largest 1% of the update)")
    try:
        ratio = float(argument)
    except ValueError:
        ratio = float("nan")
    if not 0 < ratio <= 1:
        raise ConfigError(f"strategy='sparse:{argument}': RATIO must be a number in (0, 1], e.g. sparse:0.01")
    return ratio
