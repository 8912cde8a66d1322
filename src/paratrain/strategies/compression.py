"""Gradient compression for `ddp`, as DDP communication hooks (``--compress NAME``).

DDP hands each gradient bucket (a flat tensor holding several parameters'
gradients) to a hook, which must return a future of the averaged bucket.

=============  ======================================================  ==============
name           what one rank sends per bucket of n float32 gradients   error feedback
=============  ======================================================  ==============
fp16, bf16     the bucket cast to 16 bits (all-reduce): 2n bytes        no
int8           n int8 codes and one float32 scale (all-gather): n + 4  yes
topk:RATIO     k = ceil(RATIO * n) int32 indices and float32 values     yes
               (all-gather): 8k bytes
powersgd:RANK  torch's PowerSGD: factors P (rows x RANK) and Q          yes (torch's)
               (cols x RANK) of each matrix; vectors, and matrices
               too small to gain 2x, dense
=============  ======================================================  ==============

Error feedback keeps what compression dropped (the gradient minus what was
sent) and adds it to the next step's gradient, so that every coordinate is
sent eventually; without it top-k never moves coordinates whose gradient is
never among the largest. Every compressor counts the bytes it sends, which
`ddp` reports as ``comm_bytes_per_step``.

With Adam, ``topk:RATIO`` wants a learning rate about 1/sqrt(RATIO) times the
dense one (see ``topk_adam_lr_factor``); the training loop applies it unless
``compress_lr_scale=False`` (``Compressor.adam_lr_factor``, train/optim.py).

Example:
    >>> parse_compression("topk:0.01")
    CompressionSpec(name='topk', value=0.01)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import PowerSGDState, powerSGD_hook

from paratrain.errors import ConfigError
from paratrain.strategies.topk import largest_magnitude

if TYPE_CHECKING:
    from paratrain.strategies.base import WorkerContext
    from paratrain.strategies.ddp import DDPOptions

VALID_COMPRESSORS = "fp16, bf16, int8, topk:RATIO (0 < RATIO <= 1), powersgd:RANK (integer >= 1)"

# torch's PowerSGD needs two plain all-reduce steps: DDP rebuilds its buckets
# after the first step, and error feedback / warm start memorize per-bucket tensors.
POWERSGD_MIN_WARMUP = 2


BENCH_COMPRESSORS = ("powersgd:4", "topk:0.01")
"""The compressors bench and advise try by default on a strategy that supports compression:
the two that cut a 1M-parameter model's traffic by 50-100x."""


def topk_adam_lr_factor(ratio: float) -> float:
    """How many times larger Adam's learning rate should be under ``topk:RATIO`` than under dense ddp.

    1/sqrt(RATIO): 10 at topk:0.01. Why: error feedback hands most coordinates
    their gradient in bursts, the sum of about K = 1/RATIO steps at once and
    nothing in between. Adam divides by the root of a running mean of squared
    gradients, which for a burst S every K steps is about S/sqrt(K), and its
    momentum spreads the burst over the next steps: the coordinate moves about
    sqrt(K) learning rates per burst where dense all-reduce moves it about K,
    sqrt(K) times less. SGD moves by the sum of the gradients either way, so the
    factor is Adam's alone (what SGD with top-k loses is the gradients' staleness).
    Measured (README Part 2): the 1.06M-parameter benchmark model with Adam,
    topk:0.01 at lr 1e-3 ends 13-18% above dense ddp, at lr 1e-2 within about 1%,
    while dense ddp itself gets worse at that rate. It is a starting point, not a
    law: on a 1,281-parameter model trained for only 190 steps, topk:0.05 at the
    larger rate ended 4x worse than at the dense one. Check on your model.

    Example:
        >>> topk_adam_lr_factor(0.01)
        10.0
    """
    if not 0 < ratio <= 1:
        raise ConfigError(f"topk ratio={ratio!r} must be in (0, 1]")
    return 1 / math.sqrt(ratio)


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed ``--compress`` value: 'topk:0.01' -> name 'topk', value 0.01."""

    name: str
    value: float | int | None = None


def parse_compression(text: str | None, options: "DDPOptions | None" = None) -> CompressionSpec | None:
    """Check a ``compress`` value (and ddp's options it depends on); None means no compression.

    Raises ConfigError naming the field, the rule and the value, with the valid names.
    """
    if text is None or text == "":
        return None
    name, sep, argument = str(text).partition(":")

    def fail(rule: str) -> ConfigError:
        return ConfigError(f"compress={text!r} {rule}; valid: {VALID_COMPRESSORS}")

    if name in ("fp16", "bf16", "int8"):
        if sep:
            raise fail(f"is invalid: {name} takes no argument")
        return CompressionSpec(name)
    if name == "topk":
        try:
            ratio = float(argument)
        except ValueError:
            raise fail("needs a ratio, e.g. topk:0.01 (send the largest 1% of each bucket)") from None
        if not 0 < ratio <= 1:
            raise fail(f"needs 0 < RATIO <= 1, got {argument}")
        return CompressionSpec(name, ratio)
    if name == "powersgd":
        try:
            rank = int(argument)
        except ValueError:
            raise fail("needs an integer rank, e.g. powersgd:2") from None
        if rank < 1:
            raise fail(f"needs RANK >= 1, got {argument}")
        warmup = options.powersgd_warmup if options is not None else POWERSGD_MIN_WARMUP
        if warmup < POWERSGD_MIN_WARMUP:
            raise ConfigError(
                f"powersgd_warmup={warmup} must be >= {POWERSGD_MIN_WARMUP} with compress={text!r}: torch's "
                "PowerSGD all-reduces plainly while DDP rebuilds its buckets after the first step"
            )
        return CompressionSpec(name, rank)
    raise fail("is not a known compressor")


def build_compressor(spec: CompressionSpec, options: "DDPOptions | None") -> "Compressor":
    """The compressor object for a parsed spec."""
    error_feedback = options.error_feedback if options is not None else True
    if spec.name in ("fp16", "bf16"):
        return CastCompressor(torch.float16 if spec.name == "fp16" else torch.bfloat16)
    if spec.name == "int8":
        return Int8Compressor(error_feedback)
    if spec.name == "topk":
        return TopKCompressor(float(spec.value), error_feedback)
    warmup = options.powersgd_warmup if options is not None else POWERSGD_MIN_WARMUP
    return PowerSGDCompressor(int(spec.value), warmup, error_feedback)


class Compressor:
    """A DDP communication hook that counts the bytes this rank sends."""

    single_bucket: ClassVar[bool] = False
    """True when the hook only works with one DDP bucket (see PowerSGD)."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.world_size = 1
        self.worker_rank = 0  # this process's rank (PowerSGD's `rank` is its approximation rank)

    @property
    def state_per_rank(self) -> bool:
        """True when each rank's state differs (error-feedback residuals): every rank checkpoints its own."""
        return False

    def attach(self, ddp_model: torch.nn.Module, module: torch.nn.Module, ctx: "WorkerContext") -> None:
        """Register the hook on a freshly built DDP model (before its first forward)."""
        self.world_size, self.worker_rank = ctx.world_size, ctx.rank
        ddp_model.register_comm_hook(None, self.hook)

    # Hooks are left unannotated: DDP compares annotations to dist.GradBucket and
    # `from __future__ import annotations` would turn them into strings.
    def hook(self, state, bucket):
        """Average ``bucket.buffer()`` over ranks; return a future of the result."""
        raise NotImplementedError

    def adam_lr_factor(self) -> float:
        """How many times larger Adam's learning rate should be than under dense all-reduce (1: the same)."""
        return 1.0

    def take_bytes(self) -> int:
        """Bytes sent since the last call."""
        sent, self.bytes_sent = self.bytes_sent, 0
        return sent

    def state_dict(self) -> dict:
        """What a checkpoint keeps (error-feedback residuals)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict``; called before ``attach``."""


class CastCompressor(Compressor):
    """fp16/bf16: all-reduce the bucket in 16 bits (gloo sums both), then cast back."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def hook(self, state, bucket):
        flat = bucket.buffer()
        # Divide before the sum, as torch's fp16 hook does, so fp16 cannot overflow.
        compressed = flat.to(self.dtype).div_(self.world_size)
        self.bytes_sent += compressed.numel() * compressed.element_size()

        def unpack(_future):
            flat.copy_(compressed)
            return flat

        return dist.all_reduce(compressed, async_op=True).get_future().then(unpack)


class ResidualCompressor(Compressor):
    """A compressor whose codes are all-gathered and summed, with optional error feedback.

    Residuals are kept per parameter (by name), not per bucket: DDP rebuilds its
    buckets after the first step, and a checkpoint should not depend on the layout.
    """

    def __init__(self, error_feedback: bool) -> None:
        super().__init__()
        self.error_feedback = error_feedback
        self.residuals: dict[str, torch.Tensor] = {}
        self._names: dict[int, str] = {}
        self._loaded: dict[str, torch.Tensor] = {}
        self._loaded_rank = 0

    @property
    def state_per_rank(self) -> bool:
        return self.error_feedback

    def attach(self, ddp_model: torch.nn.Module, module: torch.nn.Module, ctx: "WorkerContext") -> None:
        self._names = {id(param): name for name, param in module.named_parameters()}
        # Residuals are a rank's own: a rank takes only those it wrote itself. Another rank's
        # (rank 0's checkpoint, when this rank's own file is missing) would send that error
        # twice, so such a rank restarts from zero.
        if self._loaded_rank == ctx.rank:
            self.residuals = {name: tensor.to(ctx.device) for name, tensor in self._loaded.items()}
        self._loaded = {}
        super().attach(ddp_model, module, ctx)

    def encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(payload to all-gather, the dense gradient the payload stands for)."""
        raise NotImplementedError

    def decode_sum(self, payloads: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        """Sum over ranks of the dense gradients the payloads stand for."""
        raise NotImplementedError

    def hook(self, state, bucket):
        flat = bucket.buffer()
        segments = self._segments(bucket)
        if self.error_feedback:
            for name, start, numel in segments:
                residual = self.residuals.get(name)
                if residual is not None:
                    flat[start : start + numel].add_(residual)
        payload, sent = self.encode(flat)
        if self.error_feedback:
            error = flat - sent
            for name, start, numel in segments:
                self.residuals[name] = error[start : start + numel]
        self.bytes_sent += payload.numel() * payload.element_size()
        gathered = [torch.empty_like(payload) for _ in range(self.world_size)]

        def unpack(_future):
            flat.copy_(self.decode_sum(gathered, flat).div_(self.world_size))
            return flat

        return dist.all_gather(gathered, payload, async_op=True).get_future().then(unpack)

    def _segments(self, bucket) -> list[tuple[str, int, int]]:
        """(parameter name, offset, numel) of each gradient inside the bucket's flat buffer."""
        flat = bucket.buffer()
        base, itemsize = flat.data_ptr(), flat.element_size()
        return [
            (self._names[id(param)], (grad.data_ptr() - base) // itemsize, grad.numel())
            for param, grad in zip(bucket.parameters(), bucket.gradients())
        ]

    def state_dict(self) -> dict:
        residuals = self.residuals or self._loaded
        return {"rank": self.worker_rank,
                "residuals": {name: tensor.detach().clone().cpu() for name, tensor in residuals.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._loaded = dict(state.get("residuals") or {})
        self._loaded_rank = int(state.get("rank", 0))  # checkpoints before per-rank files: rank 0's


class TopKCompressor(ResidualCompressor):
    """topk:RATIO: each rank sends its k largest-magnitude entries as (int32 index, float32 value)."""

    def __init__(self, ratio: float, error_feedback: bool) -> None:
        super().__init__(error_feedback)
        self.ratio = ratio
        self._generator: torch.Generator | None = None

    def adam_lr_factor(self) -> float:
        return topk_adam_lr_factor(self.ratio)

    def encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # int32 indices: a DDP bucket (25 MiB by default) is far below 2**31 elements.
        k = max(1, math.ceil(self.ratio * flat.numel()))
        if self._generator is None or self._generator.device != flat.device:
            # Its own generator: the top-k's sampling must not move the training's random stream.
            self._generator = torch.Generator(device=flat.device)
            self._generator.manual_seed(1_000_003)
        index = largest_magnitude(flat, k, self._generator)
        values = flat[index].float()
        payload = torch.cat([index.to(torch.int32), values.view(torch.int32)])
        sent = torch.zeros_like(flat)
        sent[index] = flat[index]
        return payload, sent

    def decode_sum(self, payloads: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(like)
        for payload in payloads:
            k = payload.numel() // 2
            total.index_add_(0, payload[:k].long(), payload[k:].view(torch.float32).to(like.dtype))
        return total


class Int8Compressor(ResidualCompressor):
    """int8: codes round(g / scale) with scale = max|g| / 127 per bucket and rank.

    Each rank all-gathers its own codes and scale, so the sum is exact in the
    dequantized values (an all-reduce of int8 codes with different scales is not).
    """

    def encode(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = flat.abs().max().float() / 127
        # An all-zero bucket: any scale codes it exactly (and 0 would divide by zero).
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        codes = torch.round(flat / scale).clamp_(-127, 127).to(torch.int8)
        # The scale goes first: a float32 view of an int8 slice needs an aligned offset.
        payload = torch.cat([scale.reshape(1).view(torch.int8), codes])
        return payload, codes.to(flat.dtype) * scale

    def decode_sum(self, payloads: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
        total = torch.zeros_like(like)
        for payload in payloads:
            scale = payload[:4].view(torch.float32)
            total.add_(payload[4:].to(like.dtype) * scale.to(like.dtype))
        return total


class PowerSGDCompressor(Compressor):
    """powersgd:RANK: torch's ``powerSGD_hook``, with its bytes counted.

    Needs a single DDP bucket: on gloo, several buckets' chained all-reduces are
    issued in a different order on each rank and the job hangs or aborts.
    """

    single_bucket = True

    def __init__(self, rank: int, warmup: int, error_feedback: bool, min_compression_rate: float = 2.0) -> None:
        super().__init__()
        self.rank = rank
        self.warmup = warmup
        self.error_feedback = error_feedback
        self.min_compression_rate = min_compression_rate
        self.state = None
        self._loaded: dict = {}
        self._plain_calls_left = 0

    @property
    def state_per_rank(self) -> bool:
        return self.error_feedback

    def attach(self, ddp_model: torch.nn.Module, module: torch.nn.Module, ctx: "WorkerContext") -> None:
        scalars = [name for name, param in module.named_parameters() if param.dim() == 0]
        if scalars:
            raise ConfigError(
                f"compress='powersgd:{self.rank}' needs parameters with at least one dimension, but "
                f"{', '.join(scalars[:5])} are scalars (a formula model?); use compress=fp16, int8 or topk"
            )
        self.world_size, self.worker_rank = ctx.world_size, ctx.rank
        self.state = PowerSGDState(
            process_group=None,
            matrix_approximation_rank=self.rank,
            start_powerSGD_iter=self.warmup,
            min_compression_rate=self.min_compression_rate,
            use_error_feedback=self.error_feedback,
            warm_start=True,
        )
        if self._loaded:
            self._restore(self._loaded, ctx)
        self._loaded = {}
        ddp_model.register_comm_hook(self.state, self.hook)

    def _restore(self, saved: dict, ctx: "WorkerContext") -> None:
        self.state.iter = int(saved.get("iter", 0))
        # P and Q are all-reduced, hence equal on every rank; the error is the writing rank's own.
        self.state.p_memory_dict = {int(k): v.to(ctx.device) for k, v in saved.get("p", {}).items()}
        self.state.q_memory_dict = {int(k): v.to(ctx.device) for k, v in saved.get("q", {}).items()}
        if int(saved.get("rank", 0)) == ctx.rank:
            self.state.error_dict = {int(k): v.to(ctx.device) for k, v in saved.get("error", {}).items()}
        # A new DDP model rebuilds its bucket after the first step; the saved
        # tensors belong to the rebuilt layout, so the first two steps stay plain.
        self._plain_calls_left = POWERSGD_MIN_WARMUP

    def hook(self, state, bucket):
        flat = bucket.buffer()
        if self._plain_calls_left > 0:
            self._plain_calls_left -= 1
            self.bytes_sent += flat.numel() * flat.element_size()
            return allreduce_hook(None, bucket)
        if state.iter < state.start_powerSGD_iter:
            self.bytes_sent += flat.numel() * flat.element_size()
        else:
            self.bytes_sent += self.compressed_numel(bucket.gradients()) * flat.element_size()
        return powerSGD_hook(state, bucket)

    def compressed_numel(self, gradients: list[torch.Tensor]) -> int:
        """Elements PowerSGD all-reduces for these gradients (mirrors its ``_should_compress``)."""
        total = 0
        for grad in gradients:
            rows = grad.shape[0]
            cols = grad.numel() // rows
            rank = min(rows, cols, self.rank)
            low_rank = (rows + cols) * rank
            total += low_rank if low_rank * self.min_compression_rate < rows * cols else rows * cols
        return total

    def state_dict(self) -> dict:
        if self.state is None:
            return dict(self._loaded)
        return {
            "rank": self.worker_rank,
            "iter": self.state.iter,
            "p": {k: v.detach().clone().cpu() for k, v in self.state.p_memory_dict.items()},
            "q": {k: v.detach().clone().cpu() for k, v in self.state.q_memory_dict.items()},
            "error": {k: v.detach().clone().cpu() for k, v in self.state.error_dict.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self._loaded = dict(state or {})
