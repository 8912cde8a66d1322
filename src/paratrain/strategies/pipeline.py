"""`pipeline:STAGES`: the MLP cut into consecutive stages, micro-batches streamed through them.

Each rank holds one stage (a few consecutive layers, pipeline_split.py) and runs a schedule of
torch.distributed.pipelining (GPipe: every forward, then every backward; 1F1B: one forward, one
backward in the steady state, so at most STAGES micro-batches' activations are alive). With
more workers than stages the ranks form ``workers / STAGES`` pipelines that each read their
own rows, and the replicas of each stage average their gradients (data x pipeline).

A step of R rows is cut into ``microbatches`` micro-batches whose losses are each scaled by
rows/R, so the gradient equals one process's mean gradient over the R rows. ``PipelineStage``
is given its tensors' shapes up front (no inference pass), and shapes are fixed per stage
object: a step whose rows do not divide evenly (an epoch's short last batch) runs as two
schedules, q+1 rows per micro-batch then q rows, accumulating into the same gradients; one
stage and schedule is kept per (micro-batches, rows) pair.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
import torch.distributed as dist

from paratrain.errors import ConfigError
from paratrain.strategies import pipeline_split as split
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.dims import ParallelDims
from paratrain.strategies.options import StrategyOptions, check_choice_option, check_int_option

if TYPE_CHECKING:
    from paratrain.config import ParallelConfig
    from paratrain.strategies.step import StepContext

SCHEDULES = ("gpipe", "1f1b")
BALANCES = ("params", "time")


@dataclass(frozen=True)
class PipelineOptions(StrategyOptions):
    """Settings of ``pipeline:STAGES``."""

    microbatches: int = 4
    """Micro-batches each step's rows are cut into; more shrink the bubble (S-1)/(M+S-1)."""
    pipeline_schedule: str = "1f1b"
    """'gpipe' (all forwards, then all backwards) or '1f1b' (interleaved: fewer activations alive)."""
    balance: str = "params"
    """How layers are given to stages: equal parameter counts, or equal measured forward+backward time."""

    def __post_init__(self) -> None:
        check_int_option("microbatches", self.microbatches, 1)
        check_choice_option("pipeline_schedule", self.pipeline_schedule, SCHEDULES)
        check_choice_option("balance", self.balance, BALANCES)


class _TimedStage:
    """Mixed into PipelineStage: adds the stage's own forward and backward time to its ``meter``.

    Everything else a schedule step spends is waiting for a neighbour (or posting sends)."""

    meter: "_Meter"

    def forward_one_chunk(self, *args, **kwargs):
        begun = time.perf_counter()
        try:
            return super().forward_one_chunk(*args, **kwargs)
        finally:
            self.meter.compute_seconds += time.perf_counter() - begun

    def backward_one_chunk(self, *args, **kwargs):
        begun = time.perf_counter()
        try:
            return super().backward_one_chunk(*args, **kwargs)
        finally:
            self.meter.compute_seconds += time.perf_counter() - begun


@dataclass
class _Meter:
    """This rank's schedule time and own compute time since the last epoch report."""

    compute_seconds: float = 0.0
    schedule_seconds: float = 0.0
    bytes_sent: float = 0.0
    steps: int = 0


def parse_stages(argument: str | None) -> int:
    """'2' -> 2; ConfigError for anything but an integer >= 2."""
    if argument is None:
        raise ConfigError("strategy 'pipeline' needs a stage count, e.g. pipeline:2 (STAGES consecutive parts)")
    try:
        stages = int(argument)
    except ValueError:
        stages = 0
    if stages < 2 or str(stages) != argument.strip():
        raise ConfigError(f"pipeline:{argument}: STAGES must be an integer >= 2 (pipeline:1 is the whole model: "
                          "use single or ddp)")
    return stages


class PipelineStrategy(ProcessGroupStrategy):
    """Pipeline parallel (x data parallel): one stage of consecutive layers per rank."""

    name = "pipeline"
    shards_model = True
    supports_accumulation = True  # accumulate x batch_size rows per step, cut into the micro-batches
    Options: ClassVar[type[StrategyOptions]] = PipelineOptions
    conformance_spec = "pipeline:2"  # the name alone names no stage count
    advise_specs = ("pipeline:2",)
    description = ("pipeline parallel: consecutive layers on each rank, micro-batches streamed through "
                   "(pipeline:STAGES; --microbatches, --pipeline-schedule gpipe|1f1b, --balance params|time)")

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        super().__init__(None, options)
        self.stages = parse_stages(argument)
        self.settings: PipelineOptions = self.own_options  # type: ignore[assignment]
        if self.settings.pipeline_schedule == "1f1b" and self.settings.microbatches < self.stages:
            raise ConfigError(f"microbatches={self.settings.microbatches} must be >= the {self.stages} stages for "
                              f"pipeline_schedule='1f1b'; use --microbatches {self.stages} or more, or "
                              "--pipeline-schedule gpipe")
        if options is not None:
            self.parallel_dims(options.workers)  # ConfigError now, not inside the workers
        self._meter = _Meter()
        self._schedules: dict[tuple[int, int], Any] = {}
        self._loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        self._step_rows = 1
        self._step_losses: list[torch.Tensor] = []
        self.stage_layers: list[list[str]] = []
        self.stage_parameters: list[int] = []

    def parallel_dims(self, world_size: int) -> ParallelDims:
        return ParallelDims.for_world(world_size, pipeline=self.stages, what=f"pipeline:{self.stages}")

    # --- building the stage -------------------------------------------------------------------

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        blocks = split.model_blocks(model)
        split.check_stage_count(self.stages, blocks)
        dims = ctx.parallel_dims
        self._dims, self._rank, self._device = dims, ctx.rank, ctx.device
        self._stage, self._replica = dims.pipeline_rank(ctx.rank), dims.data_rank(ctx.rank)
        costs = self._costs(model, blocks)
        starts = split.balanced_split(costs, self.stages)
        ends = starts[1:] + [len(blocks)]
        self.stage_layers = [[k for b in blocks[s:e] for k in b.keys] for s, e in zip(starts, ends)]
        counts = split.parameter_costs(model, blocks)
        self.stage_parameters = [int(sum(counts[s:e])) for s, e in zip(starts, ends)]
        module, self._in_width, self._out_width = split.stage_module(model, blocks, starts, self._stage)
        # Drop the other stages' layers from the whole model built on every rank, so that their
        # tensors are freed: this rank's memory is its stage's, not the model's.
        mine = set(self.stage_layers[self._stage])
        for key in [k for k in model.layers._modules if k not in mine]:
            delattr(model.layers, key)
        self._groups(dims)
        self._module = module.to(ctx.device)
        return self._module

    def _costs(self, model: torch.nn.Module, blocks: list[split.Block]) -> list[float]:
        """Per-block costs; measured times come from rank 0 so that every rank cuts alike."""
        if self.settings.balance == "params":
            return split.parameter_costs(model, blocks)
        box: list[Any] = [split.measured_costs(model, blocks) if self._rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _groups(self, dims: ParallelDims) -> None:
        """Each replica's pipeline group and each stage's data-parallel group (every rank creates
        every group, in the same order: new_group is collective)."""
        def rank_of(replica: int, stage: int) -> int:
            return replica * self.stages + stage  # tensor degree 1: stage innermost, then replica

        self._pipeline_group = None
        for replica in range(dims.data):
            group = dist.new_group([rank_of(replica, s) for s in range(self.stages)])
            if replica == self._replica:
                self._pipeline_group = group
        self._data_group = None
        if dims.data > 1:
            for stage in range(self.stages):
                group = dist.new_group([rank_of(r, stage) for r in range(dims.data)])
                if stage == self._stage:
                    self._data_group = group
        self._previous = rank_of(self._replica, self._stage - 1) if self._stage > 0 else None
        self._next = rank_of(self._replica, self._stage + 1) if self._stage < self.stages - 1 else None

    @property
    def is_first(self) -> bool:
        return self._stage == 0

    @property
    def is_last(self) -> bool:
        return self._stage == self.stages - 1

    def _schedule(self, microbatches: int, rows: int):
        """The stage and schedule for ``microbatches`` micro-batches of ``rows`` rows (cached)."""
        key = (microbatches, rows)
        if key not in self._schedules:
            from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

            timed = _timed_stage_class(PipelineStage)
            # Shapes declared up front: PipelineStage then skips its inference pass (which would run
            # the layers on uninitialised tensors and call the loss once more).
            inputs = torch.empty(rows, self._in_width, device=self._device).requires_grad_(not self.is_first)
            outputs = torch.empty(rows, self._out_width, device=self._device).requires_grad_()
            stage = timed(self._module, self._stage, self.stages, self._device, input_args=inputs,
                          output_args=outputs, group=self._pipeline_group)
            stage.meter = self._meter
            # 1F1B needs at least as many micro-batches as stages: a shorter remainder runs as GPipe
            # (the same gradients, a different order).
            gpipe = self.settings.pipeline_schedule == "gpipe" or microbatches < self.stages
            cls = ScheduleGPipe if gpipe else Schedule1F1B
            # scale_grads=False: the loss below is already weighted by rows/R.
            self._schedules[key] = cls(stage, microbatches, loss_fn=self._weighted_loss, scale_grads=False)
        return self._schedules[key]

    # --- training -----------------------------------------------------------------------------

    def _weighted_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """A micro-batch's mean loss weighted by its share of the step's rows (the schedule sums
        the micro-batches' gradients); records the micro-batch's summed loss."""
        loss = self._loss_fn(output, target)
        self._step_losses.append(loss.detach() * len(target))
        return loss * (len(target) / self._step_rows)

    def train_step(self, ctx: "StepContext", x: torch.Tensor, y: torch.Tensor, micro_batch: int, step: int,
                   losses: list[torch.Tensor]) -> None:
        from paratrain.strategies.step import finish_step

        if ctx.scaler is not None:
            raise ConfigError("strategy 'pipeline' does not support fp16 loss scaling; use --precision fp32 or bf16")
        ctx.optimizer.zero_grad(set_to_none=True)
        self._loss_fn, self._step_rows, self._step_losses = ctx.loss_fn, len(x), []
        begun = time.perf_counter()
        for start, count, rows in micro_batch_plan(len(x), self.settings.microbatches):
            schedule = self._schedule(count, rows)
            end = start + count * rows
            with ctx.precision.autocast():
                if self.is_first:
                    schedule.step(x[start:end])
                elif self.is_last:
                    schedule.step(target=y[start:end], losses=[])
                else:
                    schedule.step()
            self._count_bytes(count * rows)
        self._meter.schedule_seconds += time.perf_counter() - begun
        if self.is_last:
            losses.extend(self._step_losses)
        self._average_replicas()
        self._meter.steps += 1
        finish_step(ctx, step)

    def _count_bytes(self, rows: int) -> None:
        """Activations sent forward and gradients sent back by this rank (fp32)."""
        if not self.is_last:
            self._meter.bytes_sent += 4.0 * rows * self._out_width
        if not self.is_first:
            self._meter.bytes_sent += 4.0 * rows * self._in_width

    def _average_replicas(self) -> None:
        """Average this stage's gradients over its data-parallel replicas (one flat all-reduce)."""
        if self._data_group is None:
            return
        grads = [p.grad for p in self._module.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self._data_group)
        flat /= self._dims.data
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        self._meter.bytes_sent += 4.0 * flat.numel()

    # --- metrics and validation ---------------------------------------------------------------

    def reports_metrics(self, ctx: WorkerContext) -> bool:
        # The last stage computes the loss: one rank per pipeline (data-parallel replica).
        return ctx.parallel_dims.pipeline_rank(ctx.rank) == self.stages - 1

    def activations_alive(self, micro_batches: int) -> float:
        # GPipe keeps every micro-batch's activations until the backwards; 1F1B at most STAGES.
        m = self.settings.microbatches
        return 1.0 if self.settings.pipeline_schedule == "gpipe" else min(self.stages, m) / m

    def eval_forward(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """Rows through the stages by plain send/recv: outputs on the last stage, None elsewhere.

        Every rank of a pipeline sees the same rows (same replica), so all make the same calls."""
        def forward(x: torch.Tensor) -> torch.Tensor | None:
            if self.is_first:
                hidden = x
            else:
                hidden = torch.empty(len(x), self._in_width, device=x.device)
                dist.recv(hidden, src=self._previous)
            out = model(hidden)
            if self.is_last:
                return out
            dist.send(out.contiguous(), dst=self._next)
            return None
        return forward

    def communication_stats(self) -> CommStats | None:
        if self._meter.steps == 0:
            return None
        per_step = self._meter.bytes_sent / self._meter.steps
        return CommStats(bytes_per_step=per_step, dense_bytes_per_step=per_step)

    def epoch_report(self) -> dict[str, Any]:
        """The expected bubble and each stage's measured idle share of its schedule time this epoch
        (a collective: every rank calls it)."""
        slots = torch.zeros(2 * self.stages, dtype=torch.float64)
        slots[self._stage] = self._meter.compute_seconds
        slots[self.stages + self._stage] = self._meter.schedule_seconds
        dist.all_reduce(slots)  # summed over the replicas of each stage
        self._meter.compute_seconds = self._meter.schedule_seconds = 0.0
        self._meter.bytes_sent, self._meter.steps = 0.0, 0
        compute, total = slots[:self.stages].tolist(), slots[self.stages:].tolist()
        m, s = self.settings.microbatches, self.stages
        return {"pipeline": {
            "stages": s, "microbatches": m, "schedule": self.settings.pipeline_schedule,
            "balance": self.settings.balance, "stage_layers": self.stage_layers,
            "stage_parameters": self.stage_parameters,
            "bubble_expected": (s - 1) / (m + s - 1),
            "idle_fraction": [max(0.0, 1.0 - c / t) if t > 0 else None for c, t in zip(compute, total)],
        }}

    # --- whole-model state --------------------------------------------------------------------

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every stage's tensors gathered to rank 0 (from the first replica), under the plain names."""
        mine = ({k: v.detach().cpu() for k, v in model.state_dict().items()} if self._replica == 0 else {})
        gathered: list[Any] | None = [None] * dist.get_world_size() if self._rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if self._rank != 0:
            return {}
        merged: dict[str, torch.Tensor] = {}
        for part in gathered:
            merged.update(part)
        return merged

    def load_full_model_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        own = model.state_dict().keys()
        model.load_state_dict({k: v for k, v in state.items() if k in own})


@functools.lru_cache(maxsize=None)
def _timed_stage_class(base: type) -> type:
    """PipelineStage with _TimedStage's timers (built on first use: pipelining is imported lazily)."""
    return type("TimedPipelineStage", (_TimedStage, base), {})


def micro_batch_plan(rows: int, microbatches: int) -> list[tuple[int, int, int]]:
    """(first row, micro-batches, rows each) runs covering ``rows``: all equal when they divide,
    else q+1 rows for the first R mod M micro-batches, then q rows (fewer micro-batches than M
    when there are fewer rows).

    Example:
        >>> micro_batch_plan(10, 4)
        [(0, 2, 3), (6, 2, 2)]
        >>> micro_batch_plan(3, 4)
        [(0, 3, 1)]
    """
    count = min(microbatches, rows)
    q, r = divmod(rows, count)
    plan = []
    if r:
        plan.append((0, r, q + 1))
    if count - r:
        plan.append((r * (q + 1), count - r, q))
    return plan
