"""In-process timings of one worker's step: the user's model, at the training batch size.

Every timing here runs in the process whose cost it measures, with the threads
that process gets in training: calibrate runs these inside p concurrent worker
processes (``job.CalibrationJob``), because two workers on two cores contend for
cores and memory bandwidth and one idle process would say each is twice as fast.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from paratrain.config import OptimConfig
from paratrain.costmodel.calibration import Fingerprint
from paratrain.models import ModelSpec, build_model

TOPK_RATIO = 0.01
POWERSGD_RANK = 4


@dataclass(frozen=True)
class Workload:
    """What one training step computes: the model, its optimizer, the task and the batch size (picklable)."""

    spec: ModelSpec
    optim: OptimConfig
    task: str
    batch_size: int

    def build(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        from paratrain.train.optim import build_optimizer

        torch.manual_seed(0)
        model = build_model(self.spec)
        return model, build_optimizer(model.parameters(), self.optim)

    def batch(self, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(rows)
        x = torch.randn(rows, len(self.spec.feature_names), generator=generator)
        if self.task == "classification":
            y = torch.randint(0, max(2, self.spec.n_outputs), (rows,), generator=generator)
        else:
            y = torch.randn(rows, generator=generator)
        return x, y

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from paratrain.train.loop import make_loss

        return make_loss(self.task)(out, y)

    def fingerprint(self) -> Fingerprint:
        model = build_model(self.spec)
        parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        config = self.spec.config
        if config.model == "mlp":
            layers = (len(self.spec.feature_names), *config.hidden, self.spec.n_outputs)
        else:
            layers = (len(self.spec.feature_names), parameters)
        return Fingerprint(tuple(int(w) for w in layers), int(parameters), int(self.batch_size), config.model)


OVERSUBSCRIBED = False
"""Set in a calibration worker when more workers than cores run at once: then they take turns on
the cores, a single step's fastest repeat is one that happened to get a core alone, and the
median is the typical step."""


def typical(times: list[float]) -> float:
    """The fastest of ``times``, or their median when the workers outnumber the cores (see above).

    The fastest, not the median, otherwise: on a shared machine other processes only ever add
    time, and the least-disturbed repeat is the one that repeats (validation takes the best epoch)."""
    return statistics.median(times) if OVERSUBSCRIBED else min(times)


def best_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Seconds of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones (see ``typical``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return typical(times)


def time_steps(workload: Workload, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rows: int,
               repeats: int) -> tuple[float, float]:
    """(forward+backward seconds, optimizer step seconds) of ``repeats`` (see ``typical``), at ``rows`` per step."""
    x, y = workload.batch(rows)

    def forward_backward() -> None:
        optimizer.zero_grad(set_to_none=True)
        workload.loss(model(x), y).backward()

    def step() -> None:
        optimizer.step()

    forward_backward()
    optimizer.step()  # the optimizer's state exists from here on, as in training
    fb, opt = [], []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        forward_backward()
        middle = time.perf_counter()
        step()
        end = time.perf_counter()
        fb.append(middle - start)
        opt.append(end - middle)
    return typical(fb), typical(opt)


def measure_compute(workload: Workload, repeats: int) -> dict[str, float]:
    """Step costs of this process as it is now (threads already set): step, forward+backward,
    optimizer, per-sample slope of forward+backward from the batch size and half of it."""
    model, optimizer = workload.build()
    batch = workload.batch_size
    fb, opt = time_steps(workload, model, optimizer, batch, repeats)
    half = max(1, batch // 2)
    fb_half, _ = time_steps(workload, model, optimizer, half, max(1, repeats // 2))
    slope = max(0.0, (fb - fb_half) / (batch - half)) if batch > half else fb / batch
    return {"step_s": fb + opt, "forward_backward_s": fb, "optimizer_s": opt, "per_sample_s": slope}


def flat_gradient(workload: Workload) -> tuple[torch.nn.Module, torch.Tensor]:
    """The model and its gradients after one backward, flattened (what DDP's one bucket holds)."""
    model, _ = workload.build()
    x, y = workload.batch(workload.batch_size)
    workload.loss(model(x), y).backward()
    return model, torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])


def measure_topk(workload: Workload, repeats: int) -> tuple[float, float, float]:
    """(encode seconds, decode fixed seconds, decode seconds per rank) of ddp's top-k hook at ratio
    0.01 on this model's gradient. Decoding is a dense zero vector plus one scatter-add per rank:
    timed with 1 and 4 ranks' payloads, so that 64 ranks are an extrapolation of a line."""
    from paratrain.strategies.compression import TopKCompressor

    _, flat = flat_gradient(workload)
    compressor = TopKCompressor(TOPK_RATIO, error_feedback=True)
    residual = torch.zeros_like(flat)

    def encode():
        flat.add_(residual)
        payload, sent = compressor.encode(flat)
        torch.sub(flat, sent, out=residual)
        return payload

    encode_s = best_time(encode, repeats)
    payload = encode()
    one = best_time(lambda: compressor.decode_sum([payload], flat), repeats)
    four = best_time(lambda: compressor.decode_sum([payload] * 4, flat), repeats)
    per_rank = max(0.0, (four - one) / 3)
    return encode_s, max(0.0, one - per_rank), per_rank


def measure_powersgd(workload: Workload, repeats: int) -> float:
    """Seconds of PowerSGD's own arithmetic at rank 4 on this model's gradients (what its hook
    computes besides the two all-reduces): P = M Q, orthogonalize P, Q = M^T P, M ~ P Q^T, error."""
    from torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook import _orthogonalize

    model, _ = flat_gradient(workload)
    matrices = []
    for p in model.parameters():
        if p.grad is None or p.grad.dim() < 2:
            continue
        m = p.grad.reshape(p.grad.shape[0], -1)
        rows, cols = m.shape
        rank = min(rows, cols, POWERSGD_RANK)
        if (rows + cols) * rank * 2 < rows * cols:  # torch compresses only where it saves 2x
            matrices.append((m, torch.randn(cols, rank), torch.zeros_like(m)))
    if not matrices:
        return 0.0

    def compute():
        for m, q, error in matrices:
            m.add_(error)
            p = (m @ q).unsqueeze(0)
            _orthogonalize(p)
            q.copy_(m.t() @ p[0])
            approx = p[0] @ q.t()
            torch.sub(m, approx, out=error)

    return best_time(compute, repeats)


def rss_bytes() -> float:
    """Resident memory of this process now (Linux), else 0."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return 0.0


def activation_bytes_per_row(workload: Workload, model: torch.nn.Module) -> float:
    """Bytes the model's leaf layers output per row in a training forward pass: what a run
    reports as activations (train/memory.py's ActivationMeter), measured on a few rows."""
    from paratrain.train.memory import ActivationMeter

    rows = 4  # BatchNorm needs more than one row in training mode
    x, _ = workload.batch(rows)
    meter = ActivationMeter(model)
    model.train()
    with torch.enable_grad():
        model(x)
    return meter.close() / rows


def memory_estimate(workload: Workload) -> dict[str, float]:
    """Bytes per rank of what training holds besides the data: parameters, gradients, optimizer
    state (Adam: two moments; SGD: momentum), activations of one batch (the leaf layers' outputs,
    as a run counts them)."""
    model = build_model(workload.spec)
    numel = sum(p.numel() for p in model.parameters() if p.requires_grad)
    itemsize = 4
    state = 2 if workload.optim.optimizer in ("adam", "adamw") else (1 if workload.optim.momentum else 0)
    activations = activation_bytes_per_row(workload, model) * workload.batch_size
    return {"parameters": float(numel * itemsize), "gradients": float(numel * itemsize),
            "optimizer_state": float(state * numel * itemsize), "activations": float(activations)}
