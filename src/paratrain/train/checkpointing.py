"""Checkpoints and the saved model, for every strategy.

Two forms of ``checkpoint.pt``:

- whole: rank 0 writes the model and optimizer state in the file itself (data-parallel
  strategies; ZeRO gathers its optimizer shards to rank 0 first);
- sharded: strategies that split the model (``Strategy.shards_model``) write model and
  optimizer through ``torch.distributed.checkpoint`` (DCP) into ``checkpoint-eNNNNN.dcp/``,
  every rank its own part, and ``checkpoint.pt`` holds the rest and names that folder.
  DCP keys tensors by the plain model's parameter names, so a sharded checkpoint loads on
  the same or a different number of workers, under another sharded strategy, or in one
  process.

Either way ``checkpoint.pt`` is written last and atomically: it always names a complete
checkpoint, and a crash while the shards are written leaves the previous one in force.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from paratrain.errors import ConfigError
from paratrain.strategies import Strategy, WorkerContext
from paratrain.train import rundir
from paratrain.train.checkpoint import load_torch, save_torch_atomic
from paratrain.train.divergence import check_finite_model

log = logging.getLogger("paratrain")

SHARDED_KEY = "sharded"
"""checkpoint.pt's entry naming the DCP folder of a sharded checkpoint."""


def _state_options() -> Any:
    """Optimizer state keyed by parameter name ("param_groups.layers.0.weight.lr"), not by group index:
    ranks holding different parameters (pipeline stages) would otherwise all write
    "param_groups.0.params" and DCP would keep one rank's list for all."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(flatten_optimizer_state_dict=True)


def sharded_folder(epoch: int, epoch_step: int = 0) -> str:
    """The DCP folder of the checkpoint after ``epoch`` epochs (and ``epoch_step`` steps of the next).

    Each checkpoint its own name: the folder checkpoint.pt names is never the one being replaced.
    """
    if epoch_step:
        return f"checkpoint-e{epoch:05d}-s{epoch_step:07d}.dcp"
    return f"checkpoint-e{epoch:05d}.dcp"


def save_checkpoint(run_dir: Path, worker: WorkerContext, strategy: Strategy, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any, state: dict[str, Any]) -> None:
    """Write the checkpoint of the loop ``state`` (LoopState as a dict). Every rank calls it."""
    strategy_state = strategy.state_dict()
    rest = {"scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "state": state, "strategy": strategy_state, "world_size": worker.world_size,
            "strategy_name": strategy.name}
    if strategy.shards_model:
        _save_sharded(run_dir, worker, strategy, model, optimizer,
                      sharded_folder(state["epoch"], state.get("epoch_step", 0)), rest)
        return
    optimizer_state = strategy.optimizer_state(optimizer)  # a collective for ZeRO: every rank calls
    plain = strategy.unwrap_model(model)
    if strategy.replicas_differ and not worker.is_main:
        # A rank other than 0 keeps its own model, optimizer and strategy state beside rank 0's,
        # and the one before: a worker stopped after this write but before rank 0's (below) leaves
        # checkpoint.pt at the previous checkpoint, which this rank must still be able to resume.
        path = run_dir / rundir.rank_checkpoint_file(worker.rank)
        save_torch_atomic(
            {"epoch": state["epoch"], "step": state["step"], "world_size": worker.world_size,
             "model": plain.state_dict(), "optimizer": optimizer.state_dict(), "strategy": strategy_state,
             PREVIOUS_KEY: _without_previous(load_torch(path)) if path.is_file() else None},
            path)
    if strategy.replicas_differ and worker.world_size > 1:
        # checkpoint.pt only after every rank's own file is written: a worker killed in between
        # leaves the previous checkpoint in force, not one whose other ranks' states are older.
        # (An all-reduce, not barrier(): async's barrier ends its training.)
        strategy.all_reduce_sum(torch.zeros(1, dtype=torch.float64))
    if worker.is_main:
        check_finite_model(plain, rundir.CHECKPOINT_FILE)
        save_torch_atomic({"model": plain.state_dict(), "optimizer": optimizer_state, **rest},
                          run_dir / rundir.CHECKPOINT_FILE)


def _save_sharded(run_dir: Path, worker: WorkerContext, strategy: Strategy, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer, folder: str, rest: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    temp = run_dir / f".{folder}.tmp"
    if worker.is_main and temp.exists():
        shutil.rmtree(temp)  # left by a crash while writing: never mixed with new shards
    strategy.barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_state_options())
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(temp))
    strategy.barrier()  # every shard is on disk before the folder becomes the checkpoint
    if worker.is_main:
        final = run_dir / folder
        if final.exists():
            shutil.rmtree(final)
        temp.rename(final)
        save_torch_atomic({SHARDED_KEY: folder, **rest}, run_dir / rundir.CHECKPOINT_FILE)
        for old in run_dir.glob("checkpoint-e*.dcp"):
            if old.name != folder:
                shutil.rmtree(old, ignore_errors=True)
    strategy.barrier()


PREVIOUS_KEY = "previous"
"""A rank's own checkpoint file also holds the one before (the checkpoint.pt in force until rank 0's write)."""


def _without_previous(own: dict[str, Any]) -> dict[str, Any]:
    own.pop(PREVIOUS_KEY, None)
    return own


OWN_KEY = "own_rank_checkpoint"
"""Where ``read_checkpoint`` puts this rank's own checkpoint file (or None), read once per resume."""


def read_checkpoint(run_dir: Path, worker: WorkerContext, strategy: Strategy) -> dict[str, Any]:
    """checkpoint.pt as written (whole, or the rest of a sharded one); on a rank other than 0 of a
    strategy whose replicas differ, also that rank's own file, under ``OWN_KEY``."""
    checkpoint = load_torch(run_dir / rundir.CHECKPOINT_FILE)
    if strategy.replicas_differ and not worker.is_main:
        path = run_dir / rundir.rank_checkpoint_file(worker.rank)
        checkpoint[OWN_KEY] = load_torch(path) if path.is_file() else None
    return checkpoint


def restore_before_wrap(checkpoint: dict[str, Any], run_dir: Path, worker: WorkerContext, strategy: Strategy,
                        model: torch.nn.Module) -> None:
    """Resume, first half: the strategy's own state, and for a whole checkpoint the plain model.

    Data-parallel strategies read the model when they wrap it (DDP broadcasts it, sparse and
    hogwild copy it into their flat or shared vectors, local SGD decides whether to broadcast),
    so a whole checkpoint loads before ``wrap_model``, and so does the model of a sharded one
    when the strategy does not shard; a sharding strategy loads it after, into the shards it
    built (``restore_after_wrap``)."""
    if SHARDED_KEY not in checkpoint:
        if strategy.shards_model:
            raise ConfigError(
                f"strategy {strategy.name!r} splits the model and resumes from sharded checkpoints, but '{run_dir}' "
                f"holds a whole-model checkpoint of strategy {checkpoint.get('strategy_name', 'ddp')!r}; resume "
                "it with a data-parallel strategy (single, ddp, zero1, ...)")
        model.load_state_dict(checkpoint["model"])
    elif not strategy.shards_model:
        # A data-parallel strategy resuming a sharded checkpoint: it too reads the model when it
        # wraps it, so the whole model is read from the shards now (every rank reads all of it).
        _load_sharded_model(run_dir / checkpoint[SHARDED_KEY], model)
    # Strategy state (residuals, counters) belongs to the strategy that wrote it.
    if checkpoint.get("strategy_name", strategy.name) == strategy.name:
        strategy.load_state_dict(checkpoint.get("strategy") or {})
    if strategy.replicas_differ and not worker.is_main:
        _load_rank_model(checkpoint, worker, model, strategy)


def restore_after_wrap(checkpoint: dict[str, Any], run_dir: Path, worker: WorkerContext, strategy: Strategy,
                       model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                       scaler: Any) -> dict[str, Any]:
    """Resume, second half: optimizer, schedule, scaler (and a sharded model); returns the loop state."""
    if SHARDED_KEY in checkpoint:
        _load_sharded(run_dir / checkpoint[SHARDED_KEY], model, optimizer)
    else:
        strategy.load_optimizer_state(optimizer, checkpoint["optimizer"])
        if strategy.replicas_differ and not worker.is_main:
            own = _own_rank_checkpoint(checkpoint, worker)
            if own is not None:
                optimizer.load_state_dict(own["optimizer"])
    if scheduler is not None and checkpoint["scheduler"] is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and checkpoint["scaler"] is not None:
        scaler.load_state_dict(checkpoint["scaler"])
    return checkpoint["state"]


def _load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    _check_shards(folder)
    if hasattr(optimizer, "consolidate_state_dict"):
        # ZeRO answers state_dict() only on the rank its partitions were gathered to, which DCP's
        # state-dict helpers cannot work with.
        raise ConfigError(f"'{folder.parent}' holds a sharded checkpoint, which a ZeRO optimizer (zero1) cannot "
                          "load; resume it with fsdp, ddp or single")
    # Ask for this rank's own keys and shapes, let DCP fill them from whatever layout wrote them.
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_state_options())
    wanted = {"model": model_state, "optimizer": optimizer_state}
    _dcp_load(wanted, folder)
    set_state_dict(model, optimizer, model_state_dict=wanted["model"], optim_state_dict=wanted["optimizer"],
                   options=_state_options())


def _load_sharded_model(folder: Path, model: torch.nn.Module) -> None:
    """The model alone from a sharded checkpoint, into a plain (not yet wrapped) module."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    _check_shards(folder)
    wanted = {"model": get_model_state_dict(model)}
    _dcp_load(wanted, folder)
    set_model_state_dict(model, wanted["model"])


def _check_shards(folder: Path) -> None:
    if not folder.is_dir():
        raise ConfigError(f"the checkpoint names its shards '{folder}', which does not exist; the run "
                          "directory is incomplete")


def _dcp_load(state: dict[str, Any], folder: Path) -> None:
    """Fill ``state`` from the DCP folder: a collective in a process group, plain reads in one process
    without one (``single`` continuing a sharded run)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    grouped = dist.is_available() and dist.is_initialized()
    with warnings.catch_warnings():
        # torch warns that it assumes one process: without a group, that is what is meant.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(folder), no_dist=not grouped)


def _own_rank_checkpoint(checkpoint: dict[str, Any], worker: WorkerContext) -> dict[str, Any] | None:
    """This rank's own checkpoint (the last or the one before) that belongs to the same epoch, step and
    world size as rank 0's, if there is one."""
    saved = checkpoint.get(OWN_KEY)
    state = checkpoint["state"]
    for candidate in (saved, (saved or {}).get(PREVIOUS_KEY)):
        if (candidate is not None and candidate.get("epoch") == state["epoch"]
                and candidate.get("world_size") == worker.world_size
                and candidate.get("step", state.get("step")) == state.get("step")):
            return candidate
    return None


def _load_rank_model(checkpoint: dict[str, Any], worker: WorkerContext, model: torch.nn.Module,
                     strategy: Strategy) -> None:
    """Continue this rank's own model from its checkpoint when it belongs to the same epoch and
    world size as rank 0's; otherwise (a crash between the writes, another world size) the rank
    goes on from rank 0's model and optimizer state, which the caller loads."""
    saved = _own_rank_checkpoint(checkpoint, worker)
    if saved is None:
        found = checkpoint.get(OWN_KEY)
        what = "none" if found is None else f"epoch {found.get('epoch')} of {found.get('world_size')} workers"
        log.warning("rank %d resumes from rank 0's model: its own checkpoint (%s) is not of epoch %d of %d "
                    "workers", worker.rank, what, checkpoint["state"]["epoch"], worker.world_size)
        return
    model.load_state_dict(saved["model"])
    strategy.load_state_dict(saved["strategy"])


def save_model(run_dir: Path, state: dict[str, torch.Tensor], extra: dict[str, Any]) -> None:
    """Write ``model.pt``: the whole model (``Strategy.full_model_state``) and what predict needs."""
    from paratrain.errors import DivergenceError
    from paratrain.train.divergence import tensors_finite

    if not tensors_finite(state.values()):
        raise DivergenceError(f"training diverged: the model's parameters are NaN or infinite; {rundir.MODEL_FILE} "
                              "was not written; try a lower --lr, e.g. a tenth")
    save_torch_atomic({"format": 1, "state_dict": {k: v.detach().cpu() for k, v in state.items()}, **extra},
                      run_dir / rundir.MODEL_FILE)
