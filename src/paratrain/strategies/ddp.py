"""`ddp`: synchronous data parallel with torch's DistributedDataParallel.

Each rank computes gradients on its own shard; DDP all-reduces (averages)
them in buckets overlapped with the backward pass, so every rank takes the
same optimizer step. Gloo on CPU, NCCL on CUDA. ``--compress`` swaps the
all-reduce for a compressing communication hook (see ``compression.py``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager

import torch
from torch.nn.parallel import DistributedDataParallel

from paratrain.errors import ConfigError
from paratrain.strategies.base import CommStats, ProcessGroupStrategy, WorkerContext
from paratrain.strategies.compression import Compressor, build_compressor, parse_compression
from paratrain.strategies.options import StrategyOptions, check_flag_option, check_int_option

if TYPE_CHECKING:
    from paratrain.config import ParallelConfig

_MIB = 1024 * 1024


@dataclass(frozen=True)
class DDPOptions(StrategyOptions):
    """ddp's settings: gradient compression and what it depends on."""

    compress: str | None = None
    """Gradient compression: fp16, bf16, powersgd:RANK, topk:RATIO, int8 (None: plain all-reduce)."""
    powersgd_warmup: int = 10
    """Optimizer steps of plain all-reduce before PowerSGD starts compressing."""
    error_feedback: bool = True
    """Carry the compression error into the next step (topk, int8, powersgd); off only for ablations."""
    compress_lr_scale: bool = True
    """With adam/adamw, multiply lr by the factor the compression calls for (topk:RATIO: 1/sqrt(RATIO),
    see compression.topk_adam_lr_factor); False trains at lr as given."""

    def __post_init__(self) -> None:
        if self.compress is not None and not isinstance(self.compress, str):
            raise ConfigError(f"compress={self.compress!r} must be text such as 'topk:0.01', "
                              f"not {type(self.compress).__name__}")
        check_int_option("powersgd_warmup", self.powersgd_warmup, 0)
        check_flag_option("error_feedback", self.error_feedback)
        check_flag_option("compress_lr_scale", self.compress_lr_scale)
        parse_compression(self.compress, self)  # ConfigError for a bad name or a too-short PowerSGD warm-up


class DistributedDataParallelStrategy(ProcessGroupStrategy):
    """Synchronous all-reduce of gradients every optimizer step, optionally compressed."""

    name = "ddp"
    supports_compression = True
    bench_specs = ("ddp",)
    Options = DDPOptions
    description = "synchronous data parallel (all-reduce of gradients every step; --compress to compress)"
    step_collective = "ddp gradient all-reduce in backward"

    def __init__(self, argument: str | None = None, options: "ParallelConfig | None" = None) -> None:
        super().__init__(argument, options)
        compress = getattr(self.own_options, "compress", None)  # a subclass (zero1) may declare no compression
        spec = parse_compression(compress, self.own_options)
        self.compressor: Compressor | None = build_compressor(spec, self.own_options) if spec is not None else None
        # Error-feedback residuals differ per rank: then every rank checkpoints its own (see Strategy).
        self.replicas_differ = self.compressor is not None and self.compressor.state_per_rank
        self._dense_bytes = 0
        self._steps = 0

    def adam_lr_factor(self) -> float:
        # The compressor decides: top-k's error feedback hands Adam bursts (see topk_adam_lr_factor).
        return self.compressor.adam_lr_factor() if self.compressor is not None else 1.0

    def wrap_model(self, model: torch.nn.Module, ctx: WorkerContext) -> torch.nn.Module:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # What a plain fp32 all-reduce sends per step: every gradient once.
        self._dense_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        options = {}
        if self.compressor is not None and self.compressor.single_bucket:
            options["bucket_cap_mb"] = self._dense_bytes // _MIB + 1  # one bucket holds every gradient
        wrapped = DistributedDataParallel(model, device_ids=device_ids, **options)
        if self.compressor is not None:
            self.compressor.attach(wrapped, model, ctx)
        return wrapped

    def sync_context(self, model: torch.nn.Module, sync: bool) -> ContextManager:
        # Gradient accumulation: skip the all-reduce on all but the last
        # micro-step; the gradients summed locally are reduced once, which is
        # what makes K micro-batches equal one batch K times larger.
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def optimizer_step(self, optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler | None") -> None:
        super().optimizer_step(optimizer, scaler)
        self._steps += 1

    def communication_stats(self) -> CommStats | None:
        """Bytes per step since the last call: counted by the hook, or dense for plain all-reduce."""
        if self._steps == 0:
            return None
        sent = self.compressor.take_bytes() / self._steps if self.compressor is not None else self._dense_bytes
        self._steps = 0
        return CommStats(bytes_per_step=sent, dense_bytes_per_step=self._dense_bytes)

    def state_dict(self) -> dict:
        return {"compressor": self.compressor.state_dict()} if self.compressor is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.compressor is not None and state.get("compressor"):
            self.compressor.load_state_dict(state["compressor"])
