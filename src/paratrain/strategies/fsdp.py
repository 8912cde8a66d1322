"""`fsdp`: fully sharded data parallel (torch FSDP2, ``fully_shard``).

Each rank keeps 1/N of every parameter, of its gradient and of the optimizer state.
Before a layer runs, its shards are all-gathered into the whole weight; after its
backward, its gradient is reduce-scattered so that each rank keeps the gradient of
its own shard and updates only that. Same arithmetic as ``ddp`` (the mean gradient
over all ranks' rows), a third to a half of the memory for parameters + gradients +
optimizer state on 2 ranks, at the price of gathering the weights on every step.

Checkpoints are sharded (``shards_model``): every rank writes its own shards through
torch.distributed.checkpoint, and they load on any number of workers (train/checkpointing.py).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

from paratrain.errors import ConfigError
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.options import StrategyOptions, check_flag_option


@dataclass(frozen=True)
class FSDPOptions(StrategyOptions):
    """Settings of ``fsdp``."""

    reshard_after_forward: bool = True
    """Free each layer's gathered weights after its forward and gather them again for its backward
    (least memory); False keeps them from forward to backward (one all-gather fewer per layer and step)."""

    def __post_init__(self) -> None:
        check_flag_option("reshard_after_forward", self.reshard_after_forward)


class FullyShardedDataParallel(ProcessGroupStrategy):
    """Parameters, gradients and optimizer state sharded over the ranks (FSDP2)."""

    name = "fsdp"
    shards_model = True
    Options = FSDPOptions
    advise_specs = ("fsdp",)
    description = ("fully sharded data parallel (FSDP2): parameters, gradients and optimizer state split "
                   "over the workers; least memory per worker")
    step_collective = "fsdp parameter all-gather / gradient reduce-scatter in the training step"

    def __init__(self, argument: str | None = None, options=None) -> None:
        super().__init__(argument, options)
        self._skeleton: torch.nn.Module | None = None
        self._gathered_bytes = 0  # the weights' bytes one all-gather of every layer moves
        self._gradient_bytes = 0  # what ddp's all-reduce would send per step
        self._micro_batches = 0
        self._steps = 0

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        _check_shardable(model)
        # The model's structure without its storage (meta tensors): validation runs the gathered
        # weights through it (eval_forward).
        self._skeleton = copy.deepcopy(model).to("meta")
        settings = {
            "mesh": ctx.parallel_dims.mesh(ctx.device.type, ("data",)),
            "reshard_after_forward": self.own_options.reshard_after_forward,
        }
        if ctx.precision == "bf16":
            # Weights gathered and multiplied in bf16, gradients reduced in fp32 (exact sums across
            # ranks); the shards the optimizer updates stay fp32.
            settings["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # One FSDP unit per linear layer (units before the root that holds them): a layer's weights
        # are gathered only while it runs. The root's unit takes what is left (norm layers).
        for layer in [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model]:
            fully_shard(layer, **settings)
        fully_shard(model, **settings)
        self._gradient_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        self._gathered_bytes = sum(p.numel() for p in model.parameters()) * (2 if ctx.precision == "bf16" else 4)
        return model

    def sync_context(self, model: torch.nn.Module, sync: bool) -> ContextManager:
        self._micro_batches += 1  # each micro-batch's forward (and backward) gathers the weights
        # Gradient accumulation: the first micro-steps keep their unsharded gradients locally; the
        # last one reduce-scatters the sum (as DDP's no_sync).
        if sync:
            return contextlib.nullcontext()
        return _without_gradient_sync(model)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        super().optimizer_step(optimizer, scaler)
        self._steps += 1

    def communication_stats(self) -> CommStats | None:
        """Payload per step, counted as ddp counts its all-reduce (the tensors' bytes once): every
        micro-batch gathers the weights for its forward, and again for its backward when they were
        freed after the forward; each step reduce-scatters the gradients once (in fp32)."""
        if self._steps == 0:
            return None
        gathers = 2 if self.own_options.reshard_after_forward else 1
        sent = (self._micro_batches * gathers * self._gathered_bytes + self._steps * self._gradient_bytes) / self._steps
        self._micro_batches, self._steps = 0, 0
        return CommStats(bytes_per_step=sent, dense_bytes_per_step=self._gradient_bytes)

    def eval_forward(self, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """Gather the whole model once (every rank calls this once per validation), then run the
        validation batches through it locally.

        Why not FSDP's own forward: it all-gathers in every call, so every rank would have to make the
        same number of calls, and the validation rows of two ranks may differ by one row (one more
        batch on one rank for some sizes: a hang). The price: the whole model is held during validation
        (as with reshard_after_forward=False)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        with torch.no_grad():
            state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        skeleton = self._skeleton

        def forward(x: torch.Tensor) -> torch.Tensor:
            skeleton.train(model.training)  # dropout and batch norm as in the module the loop switched
            return torch.func.functional_call(skeleton, state, (x,))
        return forward

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # A collective: every rank gathers, rank 0 keeps the whole tensors (on the CPU), the others none.
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_full_model_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # Every rank passes the whole state; each keeps its own shards of it.
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


@contextlib.contextmanager
def _without_gradient_sync(model: torch.nn.Module):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def _check_shardable(model: torch.nn.Module) -> None:
    """FSDP splits each parameter along its first dimension: a scalar parameter cannot be split."""
    scalars = [name for name, p in model.named_parameters() if p.dim() == 0]
    if scalars:
        raise ConfigError(
            f"strategy 'fsdp' splits every parameter along its first dimension, but the model's parameters "
            f"{scalars[:5]} are scalars (a formula model); use --strategy ddp: such a model is too small for "
            "sharding to save memory")
