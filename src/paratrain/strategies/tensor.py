"""`tensor[:DEGREE]`: tensor parallelism (Megatron-style) over an MLP's linear layers.

Each pair of consecutive ``nn.Linear`` layers of the MLP is split over DEGREE ranks with
DTensor's ``parallelize_module``: the first column-wise (each rank computes a slice of the
output features), the second row-wise (each rank multiplies its slice of the input features,
and one all-reduce sums the partial outputs). The activation (and dropout) between them works
on the slice, so a pair costs one all-reduce forward and, unless its input is the data, one
backward. A leftover Linear (an odd count, e.g. the head after 2 hidden layers) stays whole
on every rank.

DEGREE defaults to the world size. With workers = k x DEGREE the job is data x tensor: a 2-D
mesh ("data", "tensor"), tensor parallel over "tensor", and each rank's local gradients
averaged over its "data" sub-group after backward (one flat all-reduce per step, see
``_average_over_data``).

Dropout on a column-split activation draws each rank's mask from the same seeded generator
(the loop seeds by data rank), so the slices get the same mask pattern in local coordinates:
deterministic and identical on resume, but not the mask one process would draw for the whole
width. Dropout after a row-wise layer sees the whole, replicated activation and agrees on
every tensor rank (the ranks have consumed equal amounts of random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from paratrain.errors import ConfigError
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.dims import ParallelDims

if TYPE_CHECKING:
    from paratrain.config import ModelConfig, ParallelConfig

_NORMS = (nn.BatchNorm1d, nn.LayerNorm)


@dataclass(frozen=True)
class SplitPlan:
    """Which layers of ``model.layers`` tensor parallelism splits, by their module names."""

    colwise: tuple[str, ...]
    """Output features split: each rank holds a slice of the weight's rows (and of the bias)."""
    rowwise: tuple[str, ...]
    """Input features split: each rank holds a slice of the weight's columns; outputs all-reduced."""
    replicated: tuple[str, ...]
    """Linear layers left whole on every rank (an odd one out, such as the head)."""
    widths: tuple[int, ...]
    """The split width of each ``colwise`` layer (its output features)."""


def plan_split(model: nn.Module) -> SplitPlan:
    """Pair the MLP's consecutive Linear layers (column-wise, then row-wise).

    ConfigError for a model without an ``nn.Sequential`` of Linear layers (formula models) and
    for a norm layer between the two halves of a pair (it would see only a slice of the features).

    Example:
        >>> from paratrain.models.mlp import MLP
        >>> plan_split(MLP(3, (8, 8), 1))
        SplitPlan(colwise=('layers.0',), rowwise=('layers.2',), replicated=('layers.4',), widths=(8,))
    """
    layers = getattr(model, "layers", None)
    modules = list(layers) if isinstance(layers, nn.Sequential) else []
    linears = [i for i, module in enumerate(modules) if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"strategy 'tensor' splits the linear layers of an MLP, but the model ({type(model).__name__}) has none; "
            "a formula model has a handful of scalars, not matrices: train it with --strategy single or ddp")
    colwise, rowwise, widths = [], [], []
    for first, second in zip(linears[0::2], linears[1::2]):
        for between in range(first + 1, second):
            if isinstance(layers[between], _NORMS):
                raise ConfigError(
                    f"layer layers.{between} ({type(layers[between]).__name__}) normalizes the outputs of "
                    f"layers.{first}, which strategy 'tensor' splits column-wise across ranks: each rank would "
                    "normalize only its slice of the features; use norm='none' with tensor parallelism, or a "
                    "data-parallel strategy (ddp) with a norm")
        colwise.append(f"layers.{first}")
        rowwise.append(f"layers.{second}")
        widths.append(layers[first].out_features)
    replicated = tuple(f"layers.{i}" for i in linears[2 * len(colwise):])
    return SplitPlan(tuple(colwise), tuple(rowwise), replicated, tuple(widths))


def check_degree(plan: SplitPlan, degree: int) -> None:
    """ConfigError naming the first split layer whose width ``degree`` does not divide, and the
    degrees that divide every split layer."""
    for name, width in zip(plan.colwise, plan.widths):
        if width % degree:
            common = 0
            for w in plan.widths:
                common = _gcd(common, w)
            limit = max(8, 2 * degree)
            able = [d for d in range(1, limit + 1) if common % d == 0]
            raise ConfigError(
                f"layer {name} has {width} outputs, not divisible by tensor degree {degree}; degrees that divide "
                f"every split layer: {', '.join(map(str, able))}")


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def parse_degree(argument: str | None) -> int | None:
    """'2' -> 2; None -> None (the world size). ConfigError for anything but an integer >= 1."""
    if argument is None:
        return None
    text = argument.strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"strategy 'tensor:{argument}': the tensor-parallel degree after ':' must be an integer "
                          ">= 1, e.g. tensor:2 (or plain 'tensor' for all workers)")
    return int(text)


class TensorParallel(ProcessGroupStrategy):
    """Linear layers split column-wise then row-wise over the "tensor" ranks (DTensor)."""

    name = "tensor"
    shards_model = True
    advise_specs = ("tensor",)
    description = ("tensor parallel: each pair of linear layers split column- then row-wise over DEGREE ranks "
                   "(one all-reduce per pair); tensor:DEGREE with more workers adds data parallelism")

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        self.degree = parse_degree(argument)
        super().__init__(None, options)
        self.spec = "tensor" if argument is None else f"tensor:{argument}"
        self._data_group: Any = None
        self._data_degree = 1
        self._activation_bytes = 0.0
        self._gradient_bytes = 0
        self._steps = 0
        self._handles: list[Any] = []
        workers = _local_workers(options)
        # workers=1 is also the default a config passes through before --workers is applied (YAML,
        # then flags): a lone worker that cannot hold DEGREE ranks fails in parallel_dims when it starts.
        if workers is not None and workers > 1:
            self.parallel_dims(workers)  # ConfigError now rather than in every worker

    def parallel_dims(self, world_size: int) -> ParallelDims:
        degree = self.degree if self.degree is not None else world_size
        return ParallelDims.for_world(world_size, tensor=degree, what=f"strategy {self.spec!r}")

    def check_model_config(self, model: "ModelConfig") -> None:
        """Refuse formula models, norms inside a pair, and widths the degree does not divide (when
        the degree is known from the config: given after ':' or the local workers)."""
        if model.model != "mlp":
            raise ConfigError(
                f"strategy 'tensor' splits the linear layers of an MLP, but model={model.model!r}; a formula model "
                "has a handful of scalars, not matrices: train it with --strategy single or ddp")
        from paratrain.models.mlp import MLP

        with torch.device("meta"):  # shapes only: no memory, no initialisation
            plan = plan_split(MLP(1, model.hidden, 1, model.activation, model.dropout, model.norm))
        degree = self.degree if self.degree is not None else _local_workers(self.options)
        if degree is not None:
            check_degree(plan, degree)

    def wrap_model(self, model: nn.Module, ctx: WorkerContext) -> nn.Module:
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        dims = ctx.parallel_dims
        # Every rank holds the same model, so every rank raises the same error (no rank waits in a collective).
        plan = plan_split(model)
        check_degree(plan, dims.tensor)
        mesh = dims.mesh(ctx.device.type, ("data", "tensor"))
        self._data_degree = dims.data
        self._data_group = mesh["data"].get_group() if dims.data > 1 else None
        styles: dict[str, Any] = {name: ColwiseParallel() for name in plan.colwise}
        styles.update({name: RowwiseParallel() for name in plan.rowwise})
        parallelize_module(model, mesh["tensor"], styles)
        for name in plan.replicated:
            _replicate(model.get_submodule(name), mesh["tensor"])
        self._count_traffic(model, plan)
        return model

    def _count_traffic(self, model: nn.Module, plan: SplitPlan) -> None:
        """Hooks that add up the activations all-reduced while training (bytes per step, like ddp's count)."""
        def forward_sum(module, inputs, output) -> None:
            if module.training and torch.is_grad_enabled():
                self._activation_bytes += output.numel() * output.element_size()

        def backward_sum(module, inputs) -> None:
            # A column-wise layer's replicated input gets partial gradients from each rank: all-reduced in backward.
            x = inputs[0]
            if module.training and torch.is_grad_enabled() and x.requires_grad:
                self._activation_bytes += x.numel() * x.element_size()

        for name in plan.rowwise:
            self._handles.append(model.get_submodule(name).register_forward_hook(forward_sum))
        for name in plan.colwise:
            self._handles.append(model.get_submodule(name).register_forward_pre_hook(backward_sum))
        if self._data_group is not None:
            self._gradient_bytes = sum(_local(p).numel() * p.element_size() for p in model.parameters()
                                       if p.requires_grad)

    def reports_metrics(self, ctx: WorkerContext) -> bool:
        return ctx.parallel_dims.tensor_rank(ctx.rank) == 0

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        if self._data_group is not None:
            _average_over_data(optimizer, self._data_group, self._data_degree)
        super().optimizer_step(optimizer, scaler)
        self._steps += 1

    def communication_stats(self) -> CommStats | None:
        if self._steps == 0:
            return None
        sent = self._activation_bytes / self._steps + self._gradient_bytes
        self._activation_bytes, self._steps = 0.0, 0
        # Nothing is compressed: what is sent is what a plain all-reduce of these tensors sends.
        return CommStats(bytes_per_step=sent, dense_bytes_per_step=sent)

    def full_model_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # A collective: every rank gathers the DTensor shards into whole tensors with the plain names.
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))

    def load_full_model_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def teardown(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _local_workers(options: "ParallelConfig | None") -> int | None:
    """The world size the config gives, or None where it does not know it (no config; under
    torchrun, where torchrun's environment says how many processes there are)."""
    from paratrain.launch.torchrun_env import under_torchrun

    return options.workers if options is not None and not under_torchrun() else None


def _replicate(module: nn.Module, mesh: Any) -> None:
    """Keep ``module`` whole on every rank, its parameters as replicated DTensors.

    Why not plain tensors: the optimizer's fused/foreach kernels refuse a mix of DTensor and
    plain parameters. Inputs become replicated DTensors and outputs plain tensors again; the
    gradients of a replicated layer are computed locally, with no communication.
    """
    from torch.distributed.tensor import DTensor, Replicate, distribute_module

    def to_dtensor(_module, inputs, device_mesh):
        return tuple(DTensor.from_local(x, device_mesh, [Replicate()], run_check=False) for x in inputs)

    def to_plain(_module, output, _device_mesh):
        return output.to_local()

    distribute_module(module, mesh, input_fn=to_dtensor, output_fn=to_plain)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (a DTensor's local shard, a plain tensor itself)."""
    to_local: Callable[[], torch.Tensor] | None = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def _average_over_data(optimizer: torch.optim.Optimizer, group: Any, replicas: int) -> None:
    """Average each rank's local gradients over the data-parallel replicas holding the same shards.

    The ranks of one "data" sub-group hold the same slices of every layer (same tensor rank), so
    their local gradient tensors line up; one all-reduce of them flattened costs one latency per
    step. Done here, after the last micro-batch's backward, accumulation needs nothing more.
    """
    import torch.distributed as dist

    with torch.no_grad():
        grads = [_local(p.grad) for group_ in optimizer.param_groups for p in group_["params"] if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=group)
        flat /= replicas
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
