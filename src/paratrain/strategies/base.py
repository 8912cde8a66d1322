"""The one interface every parallel strategy implements.

A strategy is a small object with no-op defaults: it wraps the model, says
whether gradients should be synchronised on a micro-step, reduces metrics
across workers, and tears down. The training loop calls these hooks and never
asks which strategy it has; capabilities are class attributes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Iterable

import torch

from paratrain.strategies.dims import ParallelDims
from paratrain.strategies.options import StrategyOptions

if TYPE_CHECKING:
    from paratrain.config import ModelConfig, ParallelConfig
    from paratrain.strategies.step import StepContext

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
"""Builds the run's optimizer (its class, lr and so on) over the parameters given."""


@dataclass(frozen=True)
class WorkerContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    dims: ParallelDims | None = None
    """How the ranks split the work (the strategy's ``parallel_dims``); None: data parallel only."""
    precision: str = "fp32"
    """The precision the run trains in (fp32, bf16, fp16; 'auto' already resolved), set by the loop
    before ``wrap_model``: a strategy that keeps parameters in another dtype (FSDP's mixed-precision
    policy) reads it here."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and prints progress."""
        return self.rank == 0

    @property
    def parallel_dims(self) -> ParallelDims:
        """The job's degrees; every rank a data-parallel replica unless the strategy said otherwise."""
        return self.dims if self.dims is not None else ParallelDims(data=self.world_size, world_size=self.world_size)

    @property
    def data_rank(self) -> int:
        """Which data-parallel replica this rank belongs to: it reads that replica's rows."""
        return self.parallel_dims.data_rank(self.rank)


@dataclass
class CommStats:
    """Communication per optimizer step on this rank, and what dense all-reduce would send."""

    bytes_per_step: float
    dense_bytes_per_step: float

    @property
    def compression_ratio(self) -> float:
        """Dense bytes divided by bytes actually sent (1.0 means no saving)."""
        return self.dense_bytes_per_step / self.bytes_per_step if self.bytes_per_step > 0 else float("inf")


@dataclass
class ByteMeter:
    """Bytes a strategy sent and optimizer steps it took since its last report."""

    bytes_sent: float = 0.0
    steps: int = 0

    def take(self, dense_bytes_per_step: float) -> CommStats | None:
        """The figures since the last call, then start over; None when no step was taken."""
        if self.steps == 0:
            return None
        stats = CommStats(bytes_per_step=self.bytes_sent / self.steps, dense_bytes_per_step=dense_bytes_per_step)
        self.bytes_sent, self.steps = 0.0, 0
        return stats


class Strategy:
    """Base strategy: one process, nothing to synchronise."""

    name: ClassVar[str] = "base"
    needs_process_group: ClassVar[bool] = False
    """True when the strategy talks to other ranks through torch.distributed."""
    supports_accumulation: ClassVar[bool] = True
    replicas_differ: ClassVar[bool] = False
    """True when each worker's model or optimizer state is its own (local SGD between averages,
    Hogwild's private optimizers): every rank then checkpoints its own, and a resumed run
    continues each worker where it stopped."""
    description: ClassVar[str] = ""
    runs_across_hosts: ClassVar[bool] = True
    """False when the workers must share one machine (Hogwild's shared-memory model): such a
    strategy cannot run on emulated hosts (``link``) or across torchrun nodes."""
    supports_compression: ClassVar[bool] = False
    """True when ``compress`` (fp16, bf16, int8, topk:RATIO, powersgd:RANK) applies to it."""
    diagnostic_only: ClassVar[bool] = False
    """True for a probe that is not a way to train (``stale``): bench runs it only when named,
    and advise never recommends it."""
    communicates: ClassVar[bool] = False
    """True when the workers exchange gradients, parameters or activations while training."""
    step_collective: ClassVar[str] = ""
    """What a training step waits on from the other workers, as an error names it when a peer is
    gone (train/collectives.py); empty: "<name> training step"."""
    shards_model: ClassVar[bool] = False
    """True when each rank holds only part of the model's parameters (fsdp, pipeline, tensor):
    checkpoints are then sharded (torch.distributed.checkpoint) and ``full_model_state`` gathers
    the whole model for ``model.pt``."""
    deterministic: ClassVar[bool] = True
    """True when a run is a function of its config and seed: the same run twice, a run stopped and
    resumed, or one under torchrun ends with the same parameters. False for asynchronous strategies
    (async, hogwild), where the order in which workers' updates land is up to the scheduler."""
    selects_by_magnitude: ClassVar[bool] = False
    """True when the strategy chooses what to send by comparing values (sparse's top-k): then float32
    rounding (micro-batches summed in another order) can flip a choice, and two runs that agree in
    exact arithmetic (accumulation against one larger batch) drift apart by more than rounding."""
    conformance_spec: ClassVar[str] = "base"
    """The spelling tests/strategies/test_conformance.py runs (with its argument: ``localsgd:4``);
    by default the first of ``bench_specs``, else the name."""
    conformance_tolerance: ClassVar[float] = 1.5
    """How many times `single`'s validation loss this strategy may end with on the conformance
    suite's small problem (synchronous strategies land within a few percent; drift and staleness
    add noise)."""
    Options: ClassVar[type[StrategyOptions]] = StrategyOptions
    """The strategy's own settings (strategies/options.py), filled from ``ParallelConfig.options``."""
    bench_specs: ClassVar[tuple[str, ...]] = ()
    advise_specs: ClassVar[tuple[str, ...]] = ()
    """Spellings that ``advise`` ranks besides ``bench_specs`` (the model-splitting strategies: their
    case is memory, which advise predicts; bench runs them when named)."""
    """The spellings of this strategy that bench and advise try by default (``localsgd:8``);
    a strategy that supports compression is also tried with each of
    ``compression.BENCH_COMPRESSORS`` (``ddp+topk:0.01``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "conformance_spec" not in cls.__dict__:
            cls.conformance_spec = cls.bench_specs[0] if cls.bench_specs else cls.name

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        """``argument`` is the text after ':' in the name; ``options`` the run's ParallelConfig.

        Construction validates both (ConfigError), so a config with a bad strategy
        fails when it is built, long before any process starts.
        """
        if argument is not None:
            from paratrain.errors import ConfigError

            raise ConfigError(f"strategy {self.name!r} takes no argument, got {self.name}:{argument}")
        self._store_options(options)

    def _store_options(self, options: "ParallelConfig | None") -> None:
        """Keep the run's config and build (validate) this strategy's own ``Options`` from it;
        a strategy that parses an argument calls this from its own ``__init__``."""
        self.options = options
        self._own_options = self.Options.build(self.name, options.options if options is not None else {})

    @property
    def own_options(self) -> StrategyOptions:
        """This strategy's own settings (an instance of ``Options``), built from ``self.options``
        (also for a subclass whose ``__init__`` only stored ``self.options``)."""
        if getattr(self, "_own_options", None) is None:
            config = getattr(self, "options", None)
            self._own_options = self.Options.build(self.name, config.options if config is not None else {})
        return self._own_options

    def check_model_config(self, model: "ModelConfig") -> None:
        """ConfigError when this strategy cannot train the model ``model`` describes; called when
        the FitConfig is built, before any process starts. Any model by default."""

    def parallel_dims(self, world_size: int) -> ParallelDims:
        """How this strategy splits ``world_size`` ranks; by default every rank is a data-parallel
        replica. ConfigError when the strategy cannot use that many ranks."""
        return ParallelDims(data=world_size, world_size=world_size)

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        """Return the module the loop trains (possibly a wrapper around ``model``, or the part of
        it this rank holds). Called before the optimizer is built and before a resume loads."""
        return model

    def build_optimizer(self, model: torch.nn.Module, make: OptimizerFactory) -> torch.optim.Optimizer:
        """The optimizer over what ``wrap_model`` returned (sharded strategies' parameters are
        DTensors or a stage's share only, so it must be built after wrapping)."""
        return make(model.parameters())

    def train_step(self, ctx: "StepContext", x: torch.Tensor, y: torch.Tensor, micro_batch: int, step: int,
                   losses: list[torch.Tensor]) -> None:
        """One optimizer step over rows ``x``; appends each micro-batch's summed loss to ``losses``.
        The default is the micro-batch loop (strategies/step.py); a pipeline runs its schedule."""
        from paratrain.strategies.step import micro_batch_step

        micro_batch_step(ctx, x, y, micro_batch, step, losses)

    def reports_metrics(self, ctx: WorkerContext) -> bool:
        """Whether this rank's training loss and validation sums count: one rank per data-parallel
        replica (a pipeline's last stage, a tensor group's first rank) so each replica counts once."""
        return True

    def activations_alive(self, micro_batches: int) -> float:
        """The share of one step's activations alive at once: each of the step's ``micro_batches``
        frees its activations in its own backward (a pipeline schedule keeps several in flight)."""
        return 1.0 / max(1, micro_batches)

    def eval_forward(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """The function validation maps rows through: the model's outputs, or None on a rank that
        has none (a pipeline's first stages). Every rank of a model-parallel group calls it."""
        return self.unwrap_model(model)

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole, unsharded state dict for ``model.pt``, with the plain model's names. Every rank
        calls it (sharded strategies gather); only rank 0's answer is used."""
        return self.unwrap_model(model).state_dict()

    def load_full_model_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load a whole state dict (``full_model_state``'s form) into what ``wrap_model`` built."""
        self.unwrap_model(model).load_state_dict(state)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state for rank 0's checkpoint. Every rank calls it (ZeRO gathers its
        shards here); only rank 0's answer is written."""
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Restore what ``optimizer_state`` returned (every rank gets rank 0's)."""
        optimizer.load_state_dict(state)

    def adam_lr_factor(self) -> float:
        """How many times larger Adam's (and AdamW's) learning rate should be under this strategy
        than under dense ``ddp`` for the same model: 1.0 unless what reaches the optimizer changes
        scale (``ddp`` with ``topk:RATIO``: 1/sqrt(RATIO)). The loop applies it unless
        ``compress_lr_scale=False`` (train/optim.py, ``resolve_learning_rate``)."""
        return 1.0

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The plain module inside whatever ``wrap_model`` returned (for saving)."""
        return getattr(model, "module", model)

    def sync_context(self, model: torch.nn.Module, sync: bool) -> ContextManager:
        """Context for one micro-step's backward; ``sync`` is False on all but the last."""
        return contextlib.nullcontext()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        """Apply the gradients; a parameter server pushes them to the server instead."""
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()

    def after_optimizer_step(self, model: torch.nn.Module, step: int) -> None:
        """Called after every optimizer step (model averaging strategies use it)."""

    def synchronize_model(self, model: torch.nn.Module) -> bool:
        """Called once when training ends, before the model is saved: a strategy whose
        workers' models drift apart (local SGD) makes them agree here. Returns True when
        that changed the model, so that the loop validates the saved model once more."""
        return False

    def epoch_report(self) -> dict[str, Any]:
        """Extra fields for the epoch's metrics record (a pipeline's bubble); every rank calls it
        after each epoch's training, so it may gather across ranks. Rank 0's answer is recorded."""
        return {}

    def communication_stats(self) -> "CommStats | None":
        """Bytes sent since the last call, or None for a strategy that does not communicate."""
        return None

    def state_dict(self) -> dict:
        """Strategy state a checkpoint must keep (error-feedback residuals, step counters)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a metric tensor over workers (identity on one process)."""
        return tensor

    def barrier(self) -> None:
        """Wait for every worker (no-op on one process)."""

    def teardown(self) -> None:
        """Release what setup took."""


class ProcessGroupStrategy(Strategy):
    """A strategy whose workers share a torch.distributed process group: metrics and
    barriers go through it (gloo on CPU, NCCL on CUDA)."""

    needs_process_group: ClassVar[bool] = True
    communicates: ClassVar[bool] = True

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist  # here: one-process runs never need it

        if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
            # NCCL reduces CUDA tensors only, and the loop builds its metric vectors on the CPU in
            # float64 (exact sums): round-trip through this rank's GPU (NCCL has float64).
            on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            tensor.copy_(on_gpu.cpu())
            return tensor
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()
