"""The training loop run by every worker: one flat step, one epoch, the run.

Data flows config -> data -> model -> strategy -> loop -> run directory.
The loop knows nothing about which strategy it runs: it calls the
strategy's hooks. Rank 0 alone writes files and prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch

from paratrain.config import FitConfig
from paratrain.data.prepare import PreparedData, prepare_data
from paratrain.errors import DivergenceError
from paratrain.models import ModelSpec, build_model
from paratrain.strategies import Strategy, WorkerContext, create_strategy
from paratrain.strategies.step import StepContext
from paratrain.train import interrupts, rundir
from paratrain.train.autoprecision import PrecisionChoice, choose_precision, resumed_precision, share_from_rank0
from paratrain.train.checkpoint import save_json_atomic
from paratrain.train.checkpointing import (
    read_checkpoint,
    restore_after_wrap,
    restore_before_wrap,
    save_checkpoint,
    save_model,
)
from paratrain.train.collectives import collective
from paratrain.train.divergence import (
    checkpoint_note,
    divergence_message,
    first_non_finite_step,
    parameters_finite,
    raise_divergence,
)
from paratrain.train.memory import WIDTH, ActivationMeter, count_memory, gather_breakdowns
from paratrain.train.metrics import MetricsLog, evaluation_sums, metrics_from_sums, peak_memory_bytes
from paratrain.train.optim import build_optimizer, build_scheduler, resolve_learning_rate, scaled_optim_config
from paratrain.train.precision import Precision
from paratrain.train.progress import EpochProgress

log = logging.getLogger("paratrain")


class EpochCallback(Protocol):
    """Called on rank 0 with each epoch's metrics record; True asks the run to stop.

    Must be picklable: with several worker processes it runs inside rank 0's process.
    """

    def on_epoch_end(self, record: dict[str, Any]) -> bool: ...


@dataclass
class LoopState:
    """What a checkpoint must carry, besides the model and optimizer, to resume exactly."""

    epoch: int = 0
    step: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0
    history: list[float] = field(default_factory=list)
    precision: dict[str, Any] | None = None
    """The precision the run chose and why (PrecisionChoice.to_dict): a resumed 'auto' run keeps it."""
    activations_bytes: int = 0
    """Activations alive at once during a step on this rank, estimated on the run's first step."""
    # A checkpoint inside an epoch (train.checkpoint_every_steps) carries the epoch's part done so far;
    # at an epoch's end these are back to zero.
    epoch_step: int = 0
    """Optimizer steps of the current epoch done before this session: a resume skips them."""
    epoch_loss_sum: float = 0.0
    """Their summed loss over all ranks."""
    epoch_rows: int = 0
    """Their rows over all ranks."""
    epoch_train_seconds: float = 0.0
    """Their training time (the slowest rank's)."""
    epoch_evals: list[dict[str, Any]] = field(default_factory=list)
    """The validations inside the epoch among them (train.evals_per_epoch)."""


def make_loss(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean loss over a micro-batch: MSE for regression, cross-entropy for classification."""
    if task == "classification":
        return lambda out, y: torch.nn.functional.cross_entropy(out.float(), y)
    return lambda out, y: torch.nn.functional.mse_loss(out.float().squeeze(-1), y)


def train_step(ctx: StepContext, x: torch.Tensor, y: torch.Tensor, micro_batch: int, step: int,
               losses: list[torch.Tensor]) -> None:
    """One optimizer step over rows x, as the strategy takes it (``Strategy.train_step``)."""
    ctx.strategy.train_step(ctx, x, y, micro_batch, step, losses)


def train_epoch(
    ctx: StepContext, data: PreparedData, config: FitConfig, state: LoopState, generator: torch.Generator | None,
    after_step: Callable[[int], None] | None = None, start_step: int = 0,
    before_step: Callable[[int], None] | None = None, losses: list[torch.Tensor] | None = None,
) -> tuple[float, int, int]:
    """One pass over this rank's shard; returns (summed loss, rows trained, first non-finite step).

    The first non-finite step is 1-based within the epoch, 0 when the summed loss is finite:
    the step losses are only looked at when their sum, which is read anyway, is not finite.

    ``after_step(n)`` runs after the epoch's n-th step (1-based), on every rank;
    ``before_step(i)`` before its step i (0-based). ``start_step`` steps are skipped (done
    before a mid-epoch checkpoint); the shuffled order is the same. ``losses``, when given,
    receives the micro-batch losses as they come.
    """
    x, y = data.x_train, data.y_train
    if generator is not None:
        # One gather per epoch, then contiguous slices: cheaper than indexing each batch.
        order = torch.randperm(len(x), generator=generator)
        x, y = x[order], y[order]
    rows_per_step = config.train.batch_size * config.train.accumulate
    ctx.model.train()
    losses = [] if losses is None else losses
    step_ends: list[int] = []  # len(losses) after each step: maps a micro-batch to its step
    first_row = min(start_step * rows_per_step, len(x))
    for start in range(first_row, len(x), rows_per_step):
        if before_step is not None:
            before_step(start // rows_per_step)
        train_step(ctx, x[start : start + rows_per_step], y[start : start + rows_per_step],
                   config.train.batch_size, state.step, losses)
        step_ends.append(len(losses))
        state.step += 1
        if after_step is not None:
            after_step(start // rows_per_step + 1)
    rows = len(x) - first_row
    if not losses:
        return 0.0, rows, 0
    stacked = torch.stack(losses).double()
    total = stacked.sum().item()  # the epoch's one sync
    return total, rows, (first_non_finite_step(stacked, step_ends) + start_step if not math.isfinite(total) else 0)


def steps_per_epoch(data: PreparedData, config: FitConfig) -> int:
    """Optimizer steps of one epoch on this rank (every rank has as many: equal shards)."""
    return max(1, math.ceil(len(data.x_train) / (config.train.batch_size * config.train.accumulate)))


def epoch_generator(config: FitConfig, epoch: int, rank: int) -> torch.Generator | None:
    """Shuffling seeded by (seed, epoch, rank): resuming at any epoch reproduces the order."""
    if not config.data.shuffle:
        return None
    return torch.Generator().manual_seed(config.train.seed * 1_000_003 + epoch * 7919 + rank)


def run_training(config: FitConfig, worker: WorkerContext, source: Any, run_dir: Path, resume: bool,
                 callbacks: Sequence[EpochCallback] = ()) -> dict | None:
    """Train on this worker; rank 0 writes the run directory and returns the summary.

    ``callbacks`` run on rank 0 after each epoch's record is written; if one
    returns True, every rank stops after that epoch (a pruned search trial).
    """
    torch.manual_seed(config.train.seed)
    strategy = create_strategy(config.parallel.strategy, config.parallel)
    worker = dataclasses.replace(worker, dims=strategy.parallel_dims(worker.world_size))
    # Rows are sharded over the data-parallel replicas only: the ranks of one pipeline or
    # tensor-parallel group must see the same rows.
    data = prepare_data(config, source, worker.data_rank, worker.parallel_dims.data, worker.device)
    if worker.is_main:
        for hint in data.encoder.hints:
            log.warning(hint)
    spec = ModelSpec(config.model, tuple(data.feature_names), data.n_outputs)
    model = build_model(spec).to(worker.device)
    # Read once: the precision, both halves of the resume and the loop state come from it.
    checkpoint = read_checkpoint(run_dir, worker, strategy) if resume else None
    choice = _resolve_precision(config, worker, checkpoint, model, data)
    # From here on the config names the precision actually used (divergence hints read it).
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=choice.name))
    precision = Precision(choice.name, worker.device)
    worker = dataclasses.replace(worker, precision=choice.name)  # wrap_model may read it (fsdp's bf16 policy)
    rate = resolve_learning_rate(config, strategy)
    if rate.reason and worker.is_main:
        log.info("%s", rate.reason)
    optim_config = scaled_optim_config(config.optim, rate)
    # Order matters: sharding strategies replace the parameters (DTensors, a stage's share), so the
    # optimizer is built on what the strategy built, and a resume loads into that too.
    if checkpoint is not None:
        restore_before_wrap(checkpoint, run_dir, worker, strategy, model)
    wrapped = strategy.wrap_model(model, worker)
    optimizer = strategy.build_optimizer(wrapped, lambda params: build_optimizer(params, optim_config))
    scheduler = build_scheduler(optimizer, optim_config, config.train.epochs, steps_per_epoch(data, config))
    scaler = precision.make_scaler()
    state = LoopState(precision=choice.to_dict())
    metrics = MetricsLog(run_dir / rundir.METRICS_FILE)
    if checkpoint is not None:
        state = LoopState(**restore_after_wrap(checkpoint, run_dir, worker, strategy, wrapped, optimizer,
                                               scheduler, scaler))
        state.precision = choice.to_dict()
        if worker.is_main:
            metrics.truncate_after(state.epoch)
    ctx = StepContext(wrapped, strategy, optimizer, scheduler, scaler, precision, make_loss(data.task))
    progress = EpochProgress(config.train.epochs, state.epoch, worker.is_main and config.output.verbosity > 0)
    wall_start = time.perf_counter()
    stopped_early = False
    stopped_by_callback = False
    sessions_epochs = 0
    try:
        while state.epoch < config.train.epochs:
            # Reseed per epoch and rank so dropout masks do not depend on where a run resumed (per
            # step with step checkpoints: stepcheckpoints.step_seed). The data rank, not the rank:
            # the ranks of one tensor-parallel group need the same dropout masks.
            torch.manual_seed(config.train.seed * 1_000_003 + state.epoch * 7919 + worker.data_rank + 1)
            record = _run_epoch(ctx, data, config, state, worker, strategy, run_dir)
            state.epoch += 1
            sessions_epochs += 1
            stopped_early = _update_early_stopping(state, record, config)
            # Ctrl-C or SIGTERM waits for the end of this block: the checkpoint and its epoch's
            # metrics line are written both or neither (interrupts.deferred).
            with interrupts.deferred():
                if _checkpoint_due(config, state, sessions_epochs, stopped_early):
                    with _waiting_on("checkpoint (barriers and state gathers)", worker, config):
                        save_checkpoint(run_dir, worker, strategy, wrapped, optimizer, scheduler, scaler,
                                        dict(state.__dict__))
                if worker.is_main:
                    metrics.append(record)
                    progress.update(record)
            if callbacks:
                stopped_by_callback = _ask_callbacks(callbacks, record, worker, strategy)
                if stopped_by_callback:
                    log.info("stopped after epoch %d at a callback's request", state.epoch)
                    break
            if stopped_early:
                log.info("early stopping after epoch %d: no improvement for %d epochs", state.epoch, state.bad_epochs)
                break
            if config.train.stop_after is not None and sessions_epochs >= config.train.stop_after:
                break
    except DivergenceError as exc:
        # Every rank raises here together: leave the strategy cleanly (a parameter server,
        # a shared-memory file), then tell the user where the last finite state is.
        with contextlib.suppress(Exception):
            strategy.teardown()
        raise DivergenceError(f"{exc}{checkpoint_note(run_dir)}") from None
    finally:
        progress.close()
    finished = stopped_early or stopped_by_callback or state.epoch >= config.train.epochs
    final_validation: dict[str, Any] = {}
    if finished and strategy.synchronize_model(wrapped):
        # The workers' models were averaged: the per-epoch figures described each worker's
        # own model, the summary must describe the model that is saved.
        final_validation = _validate(ctx, data, config, strategy, worker)
    with _waiting_on("final model gather and barrier", worker, config):
        full_state = strategy.full_model_state(wrapped) if finished else {}  # every rank takes part
        strategy.barrier()
    strategy.teardown()
    if not worker.is_main:
        return None
    if not finished:
        return {"status": "stopped", "epochs": state.epoch, "run_dir": str(run_dir)}
    save_model(run_dir, full_state, {"spec": spec.to_dict(), "encoder": data.encoder.to_dict(), "task": data.task})
    summary = _summary(config, worker, state, metrics.read(), time.perf_counter() - wall_start, stopped_early, data, run_dir)
    summary["lr_scale"] = rate.scale
    summary["effective_lr"] = rate.effective
    if final_validation:
        summary["last_epoch_val_loss"] = summary.get("val_loss")
        summary.update(final_validation)
    summary["stopped_by_callback"] = stopped_by_callback
    summary.update(choice.summary_fields())
    save_json_atomic(summary, run_dir / rundir.SUMMARY_FILE)
    return summary


def _resolve_precision(config: FitConfig, worker: WorkerContext, checkpoint: dict[str, Any] | None,
                       model: torch.nn.Module, data: PreparedData) -> PrecisionChoice:
    """The run's precision: as configured, kept from the run being resumed, or (auto) measured
    by rank 0 and shared with every rank; rank 0 logs it in one line."""
    make_optimizer = lambda params: build_optimizer(params, config.optim)  # noqa: E731
    if config.train.precision != "auto":
        return choose_precision(config, model, data.x_train, data.y_train, make_loss(data.task), make_optimizer)
    # Every rank reads rank 0's checkpoint when resuming: all find the same earlier choice (or none).
    choice = resumed_precision(config, checkpoint.get("state", {})) if checkpoint is not None else None
    if choice is None:
        mine = (choose_precision(config, model, data.x_train, data.y_train, make_loss(data.task), make_optimizer)
                if worker.is_main else None)
        choice = share_from_rank0(mine, worker.world_size)
    if worker.is_main:
        log.info("precision: %s (auto) - %s", choice.name, choice.reason)
    return choice


def _run_epoch(ctx: StepContext, data: PreparedData, config: FitConfig, state: LoopState,
               worker: WorkerContext, strategy: Strategy, run_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    inner = _InnerValidations(ctx, data, config, state, strategy, worker, started)
    after_step = inner.after_step if inner.points else None
    before_step = checkpoints = None
    losses: list[torch.Tensor] = []
    if config.train.checkpoint_every_steps > 0:
        after_step, before_step, checkpoints = _step_checkpoint_hooks(ctx, data, config, state, worker, run_dir,
                                                                      inner, losses, after_step)
    if state.activations_bytes == 0:
        after_step = _measure_activations(ctx, state, config, after_step)
    with _waiting_on(strategy.step_collective or f"{strategy.name} training step", worker, config):
        loss_sum, rows, bad_step = train_epoch(ctx, data, config, state,
                                               epoch_generator(config, state.epoch, worker.data_rank), after_step,
                                               state.epoch_step, before_step, losses)
    # Validations inside the epoch are measurement, not training: samples/s leaves them out.
    train_seconds = time.perf_counter() - started - inner.seconds
    # Whether this rank's parameters are finite rides on the all-reduce the loss needs anyway,
    # so that every rank learns that one diverged, and all stop together.
    bad_params = 0.0 if parameters_finite(strategy.unwrap_model(ctx.model)) else 1.0
    # Each rank's training time and memory breakdown ride along in their own slots (the sum of one-hot
    # slots gathers them). The epoch took as long as its slowest rank: with asynchronous trainers
    # (async, hogwild) rank 0 may finish its shard long before the others (seen: async at 100mbit
    # reported rank 0's 21k samples/s while the trainer across the link ran 20x slower).
    world = worker.world_size
    slots = [0.0] * ((1 + WIDTH) * world)
    slots[worker.rank] = train_seconds
    memory = count_memory(ctx.model, ctx.optimizer, peak_memory_bytes(worker.device), state.activations_bytes)
    slots[world + worker.rank * WIDTH: world + (worker.rank + 1) * WIDTH] = memory.to_list()
    # Each data-parallel replica's loss and rows count once (its pipeline's last stage, its tensor group's first rank).
    counts = 1.0 if strategy.reports_metrics(worker) else 0.0
    with _waiting_on("epoch metrics all_reduce", worker, config):
        totals = strategy.all_reduce_sum(torch.tensor([loss_sum * counts, rows * counts, bad_params, *slots],
                                                      dtype=torch.float64))
    train_seconds = float(max(totals[3:3 + world].tolist()))
    memory_per_rank = gather_breakdowns(totals, world, 3 + world)
    if state.epoch_step > 0:
        # The epoch resumed from a checkpoint inside it: the steps before it count too.
        totals[0] += state.epoch_loss_sum
        totals[1] += state.epoch_rows
        train_seconds += state.epoch_train_seconds
    state.epoch_step, state.epoch_loss_sum, state.epoch_rows, state.epoch_train_seconds = 0, 0.0, 0, 0.0
    state.epoch_evals = []
    if not math.isfinite(float(totals[0])) or totals[2] > 0:
        raise_divergence(config, state.epoch + 1, worker, strategy, float(totals[0]), bad_step)
    validation = _validate(ctx, data, config, strategy, worker)
    if not math.isfinite(validation.get("val_loss", 0.0)):
        # Asynchronous strategies (hogwild, async) may change the model after the check above.
        what = ("the model's parameters became NaN or infinite"
                if not parameters_finite(strategy.unwrap_model(ctx.model))
                else f"the validation loss became {validation['val_loss']} while the training loss is finite")
        raise DivergenceError(divergence_message(config, state.epoch + 1, what))
    # A rank that began this epoch before rank 0 (rank 0 was writing the checkpoint) may have trained
    # longer than rank 0's wall time: the epoch lasted at least as long as its slowest rank trained.
    seconds = max(time.perf_counter() - started, train_seconds)
    global_rows = int(totals[1])
    state.train_seconds += train_seconds
    state.samples_seen += global_rows
    record = {"epoch": state.epoch + 1, "train_loss": float(totals[0]) / max(global_rows, 1)}
    record.update(validation)
    record["lr"] = ctx.optimizer.param_groups[0]["lr"]
    comm = strategy.communication_stats()
    if comm is not None:
        record["comm_bytes_per_step"] = comm.bytes_per_step
        # No bytes sent this epoch (local steps only): the ratio is undefined, not infinite
        # (JSON has no infinity).
        record["compression_ratio"] = comm.compression_ratio if comm.bytes_per_step > 0 else None
    record.update(strategy.epoch_report())  # every rank calls it (it may gather)
    record["samples_per_s"] = global_rows / train_seconds if train_seconds > 0 else None
    record["seconds"] = seconds
    record["train_seconds"] = train_seconds
    record["peak_memory_bytes"] = max(m.peak_bytes for m in memory_per_rank)  # the largest rank's peak so far
    record["memory"] = [m.to_dict() for m in memory_per_rank]
    if inner.records:
        record["evals"] = inner.records
    if checkpoints is not None:
        record["step_checkpoints"] = checkpoints.written
        record["step_checkpoint_seconds"] = checkpoints.seconds_spent  # rank 0's, inside train_seconds
    return record


class _InnerValidations:
    """Validations at evenly spaced steps inside one epoch (train.evals_per_epoch > 1).

    Every rank validates at the same steps: the metrics are summed across ranks, and
    the shards hold the same number of rows (data/split.py), hence the same steps.
    """

    def __init__(self, ctx: StepContext, data: PreparedData, config: FitConfig, state: LoopState,
                 strategy: Strategy, worker: WorkerContext, started: float) -> None:
        self.ctx, self.data, self.config, self.state, self.strategy = ctx, data, config, state, strategy
        self.worker = worker
        self.started = started
        self.steps = steps_per_epoch(data, config)
        n = config.train.evals_per_epoch
        # The epoch's end is validated anyway; more validations than steps collapse onto steps.
        self.points = {round(k * self.steps / n) for k in range(1, n)} - {0, self.steps}
        self.seconds = 0.0
        """Time spent validating inside this epoch so far."""
        self.records: list[dict[str, Any]] = list(state.epoch_evals)  # those before a mid-epoch resume

    def after_step(self, done: int) -> None:
        if done not in self.points:
            return
        begun = time.perf_counter()
        validation = _validate(self.ctx, self.data, self.config, self.strategy, self.worker)
        ended = time.perf_counter()
        record = {"step": self.state.step, "epoch_fraction": done / self.steps,
                  "train_seconds": begun - self.started - self.seconds, "seconds": ended - self.started}
        record.update(validation)
        self.seconds += ended - begun
        self.records.append(record)


def _step_checkpoint_hooks(ctx: StepContext, data: PreparedData, config: FitConfig, state: LoopState,
                           worker: WorkerContext, run_dir: Path, inner: "_InnerValidations",
                           losses: list[torch.Tensor], then: Callable[[int], None] | None,
                           ) -> tuple[Callable[[int], None], Callable[[int], None], Any]:
    """``train_epoch``'s hooks for checkpoints inside the epoch: a checkpoint every
    checkpoint_every_steps steps (after ``then``), and dropout reseeded before each step."""
    from paratrain.train.stepcheckpoints import StepCheckpoints, step_seed

    checkpoints = StepCheckpoints(ctx, config, state, worker, run_dir, steps_per_epoch(data, config),
                                  config.train.batch_size * config.train.accumulate, losses,
                                  evals=lambda: inner.records,
                                  seconds=lambda: time.perf_counter() - inner.started - inner.seconds)

    def after_step(done: int) -> None:
        if then is not None:
            then(done)
        checkpoints.after_step(done)

    def before_step(index: int) -> None:
        torch.manual_seed(step_seed(config, state.epoch, index, worker.data_rank))
    return after_step, before_step, checkpoints


def _measure_activations(ctx: StepContext, state: LoopState, config: FitConfig,
                         then: Callable[[int], None] | None) -> Callable[[int], None]:
    """Hook the model for the epoch's first step; record the activations alive at once in ``state``."""
    meter = ActivationMeter(ctx.model)

    def after_step(done: int) -> None:
        if done == 1:
            seen = meter.close()
            state.activations_bytes = int(seen * ctx.strategy.activations_alive(config.train.accumulate))
        if then is not None:
            then(done)
    return after_step


def _validate(ctx: StepContext, data: PreparedData, config: FitConfig, strategy: Strategy,
              worker: WorkerContext) -> dict[str, Any]:
    """Validation metrics of the model(s) now: each replica scores its own rows, the sums add up."""
    with _waiting_on("validation (forward and metrics all_reduce)", worker, config):
        sums = evaluation_sums(ctx.model, strategy.eval_forward(ctx.model), data.x_val, data.y_val, data.task,
                               max(config.train.batch_size, 4096), ctx.precision.autocast)
        if not strategy.reports_metrics(worker):
            sums.zero_()  # this replica's rows are counted by another rank of its group
        sums = strategy.all_reduce_sum(sums)
    return metrics_from_sums(sums, data.task, data.target_scale)


def _waiting_on(what: str, worker: WorkerContext, config: FitConfig) -> contextlib.AbstractContextManager:
    """A peer gone or a link cut while in the block raises CollectiveError naming ``what``."""
    return collective(what, worker.rank, config.parallel.timeout_s)


def _ask_callbacks(callbacks: Sequence[EpochCallback], record: dict[str, Any], worker: WorkerContext,
                   strategy: Strategy) -> bool:
    """Rank 0 asks the callbacks; the answer is shared so that all ranks stop together."""
    wants_stop = worker.is_main and any([callback.on_epoch_end(record) for callback in callbacks])
    votes = strategy.all_reduce_sum(torch.tensor([1.0 if wants_stop else 0.0], dtype=torch.float64))
    return bool(votes.item() > 0)


def _checkpoint_due(config: FitConfig, state: LoopState, session_epochs: int, stopping: bool) -> bool:
    """Every checkpoint_every epochs, and whenever this session is about to end."""
    every = config.train.checkpoint_every
    if every == 0:
        return False
    ending = (stopping or state.epoch >= config.train.epochs
              or (config.train.stop_after is not None and session_epochs >= config.train.stop_after))
    return ending or state.epoch % every == 0


def _update_early_stopping(state: LoopState, record: dict[str, Any], config: FitConfig) -> bool:
    """Track the best validation loss (training loss without a validation set); True to stop."""
    current = record.get("val_loss", record["train_loss"])
    state.history.append(current)
    if current < state.best_val_loss - config.train.min_delta:
        state.best_val_loss = current
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return config.train.patience is not None and state.bad_epochs >= config.train.patience


def _summary(config: FitConfig, worker: WorkerContext, state: LoopState, records: list[dict], wall: float,
             stopped_early: bool, data: PreparedData, run_dir: Path) -> dict[str, Any]:
    last = records[-1] if records else {}
    summary: dict[str, Any] = {
        "status": "finished",
        "strategy": config.parallel.strategy,
        "workers": worker.world_size,
        "link": config.parallel.link,
        "task": data.task,
        "epochs": state.epoch,
        "stopped_early": stopped_early,
    }
    for key in ("train_loss", "val_loss", "val_r2", "val_r2_note", "val_rmse", "val_accuracy", "comm_bytes_per_step",
                "compression_ratio", "peak_memory_bytes", "memory", "pipeline"):
        if key in last:
            summary[key] = last[key]
    summary["best_val_loss"] = state.best_val_loss
    summary["wall_seconds"] = wall
    # When the loop began (Unix time): the launching process counts start-up up to here (fit.py).
    summary["train_started_at"] = time.time() - wall
    summary["train_seconds"] = state.train_seconds
    # JSON has no NaN: a run too short to time has no rate (null), not a made-up one.
    summary["samples_per_s"] = state.samples_seen / state.train_seconds if state.train_seconds > 0 else None
    summary["n_train"] = data.n_train_total
    summary["n_val"] = data.n_val_total
    summary["threads_per_worker"] = torch.get_num_threads()
    summary["run_dir"] = str(run_dir)
    return summary
