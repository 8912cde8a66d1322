"""Time a few training steps of a model in fp32 and in bf16, and see where each gets.

The probe trains two copies of the user's model, from the same initial weights, on
the same batches, one under bf16 autocast. It interleaves their steps (fp32, bf16,
fp32, ...) so that load from other processes hits both alike, drops warm-up steps
(allocator, kernel selection), and reports median step times and each copy's loss
on the probe rows at the end. The caller's model, optimizer and random state are
left untouched.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Any], torch.optim.Optimizer]

WARMUP_STEPS = 2
"""Steps per precision not timed: the first steps allocate and pick kernels."""
MIN_PAIRS = 3
"""Timed (fp32, bf16) step pairs the probe always takes."""
MIN_TIMED_STEPS = 5
"""Timed pairs the probe takes unless that would run past 1.5x its budget."""
MAX_TIMED_STEPS = 15
MIN_STEADY_FLOPS = 2e9
"""fp32 flop/s per thread below which a probe is taken as disturbed. An idle AVX-512 core ran
MLP steps at 70-80 GFLOP/s; steps on a machine with every core taken by other work ran at 0.6."""
TIME_BUDGET_S = 2.0
"""Aim for the whole probe (both precisions, warm-up included) to take about this long."""


@dataclass(frozen=True)
class ProbeMeasurement:
    """What the probe measured; all a decision needs, and what summary.json shows."""

    fp32_step_s: float
    """Median seconds of one fp32 training step (forward, backward, optimizer)."""
    bf16_step_s: float
    """Median seconds of one bf16-autocast training step."""
    fp32_loss: float
    """Loss on the probe rows after training the fp32 copy for ``steps`` steps."""
    bf16_loss: float
    """The same for the bf16 copy (same start, same batches)."""
    steps: int
    """Training steps per precision (warm-up included); ``timed_steps`` of them were timed."""
    timed_steps: int
    batch_size: int
    threads: int
    seconds: float
    """Wall time of the whole probe."""
    parameters: int = 0
    """Parameters of the model (0: unknown); with the batch size it gives the work of a step."""
    fp32_steps_s: tuple[float, ...] = ()
    """Every timed fp32 step, in order; ``bf16_steps_s[i]`` ran right beside ``fp32_steps_s[i]``."""
    bf16_steps_s: tuple[float, ...] = ()

    @property
    def speedup(self) -> float:
        """fp32 step time over bf16 step time (above 1: bf16 is faster): the median of the ratios
        of steps that ran side by side, which a burst of load from elsewhere moves less than a
        ratio of medians; that ratio when the pairs are not known."""
        pairs = [a / b for a, b in zip(self.fp32_steps_s, self.bf16_steps_s) if b > 0]
        if pairs:
            return statistics.median(pairs)
        return self.fp32_step_s / self.bf16_step_s if self.bf16_step_s > 0 else 0.0

    @property
    def best_speedup(self) -> float:
        """Fastest fp32 step over fastest bf16 step: the least disturbed by other load."""
        if self.fp32_steps_s and self.bf16_steps_s and min(self.bf16_steps_s) > 0:
            return min(self.fp32_steps_s) / min(self.bf16_steps_s)
        return self.speedup

    @property
    def fp32_flops_per_thread(self) -> float | None:
        """Achieved fp32 rate (about 6 flops per parameter and row) per thread; None if unknown."""
        if not self.parameters or self.fp32_step_s <= 0:
            return None
        return 6 * self.parameters * self.batch_size / self.fp32_step_s / max(self.threads, 1)

    @property
    def steady(self) -> bool:
        """Other load did not decide the answer: in each precision the median step is within 1.5x
        of the fastest, the median and fastest-step speedups agree within 25%, and fp32 ran at
        least MIN_STEADY_FLOPS per thread (a machine whose cores are all taken slows every step
        alike: the steps look steady, but the timings say nothing about this machine)."""
        rate = self.fp32_flops_per_thread
        if rate is not None and rate < MIN_STEADY_FLOPS:
            return False
        for steps in (self.fp32_steps_s, self.bf16_steps_s):
            if steps and not statistics.median(steps) <= 1.5 * min(steps):
                return False
        low, high = sorted((self.speedup, self.best_speedup))
        return low > 0 and high / low <= 1.25

    @property
    def loss_gap(self) -> float:
        """|bf16 loss - fp32 loss| relative to the fp32 loss."""
        return abs(self.bf16_loss - self.fp32_loss) / max(abs(self.fp32_loss), 1e-12)

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        # Lists, as JSON reads them back: the summary in memory and on disk are then equal.
        values.update(fp32_steps_s=list(self.fp32_steps_s), bf16_steps_s=list(self.bf16_steps_s))
        return {**values, "speedup": self.speedup, "best_speedup": self.best_speedup, "steady": self.steady,
                "loss_gap": self.loss_gap}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ProbeMeasurement":
        names = set(cls.__dataclass_fields__)
        kept = {k: v for k, v in values.items() if k in names}
        for key in ("fp32_steps_s", "bf16_steps_s"):
            kept[key] = tuple(kept.get(key) or ())
        return cls(**kept)


class _Copy:
    """One copy of the model with its own optimizer, trained under one precision."""

    def __init__(self, model: torch.nn.Module, make_optimizer: OptimizerFactory, dtype: torch.dtype | None,
                 device: torch.device) -> None:
        self.model = copy.deepcopy(model).train()
        self.optimizer = make_optimizer(self.model.parameters())
        self.dtype, self.device = dtype, device
        self.seconds: list[float] = []

    def autocast(self):
        if self.dtype is None:
            return torch.autocast(device_type=self.device.type, enabled=False)
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def step(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn, timed: bool) -> None:
        _sync(self.device)
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = loss_fn(self.model(x), y)
        loss.backward()
        self.optimizer.step()
        _sync(self.device)
        if timed:
            self.seconds.append(time.perf_counter() - started)

    @torch.no_grad()
    def loss(self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> float:
        self.model.eval()
        with self.autocast():
            value = float(loss_fn(self.model(x), y))
        self.model.train()
        return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def probe_precisions(model: torch.nn.Module, make_optimizer: OptimizerFactory, loss_fn: LossFn,
                     x: torch.Tensor, y: torch.Tensor, batch_size: int,
                     budget_s: float = TIME_BUDGET_S) -> ProbeMeasurement:
    """Train fp32 and bf16 copies of ``model`` on the same batches of (x, y); time and compare.

    Timed steps go on while within ``budget_s`` (MIN_TIMED_STEPS to MAX_TIMED_STEPS pairs; at
    least MIN_PAIRS, even past the budget, for a big model or on a busy machine).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
        >>> mse = lambda out, t: torch.nn.functional.mse_loss(out.float().squeeze(-1), t)
        >>> m = probe_precisions(net, lambda p: torch.optim.Adam(p), mse, torch.randn(64, 4), torch.randn(64), 16)
        >>> m.timed_steps >= 3
        True
    """
    started = time.perf_counter()
    device = next(model.parameters()).device
    batches = _batches(x, y, batch_size)
    # Random state is the caller's: the probe's dropout masks must not shift the run's.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        fp32 = _Copy(model, make_optimizer, None, device)
        bf16 = _Copy(model, make_optimizer, torch.bfloat16, device)
        step = 0
        for _ in range(WARMUP_STEPS):
            for run in (fp32, bf16):
                run.step(*batches[step % len(batches)], loss_fn, timed=False)
            step += 1
        deadline = started + budget_s
        timed = 0
        # Up to MAX_TIMED_STEPS pairs within the budget, but never fewer than MIN_PAIRS: a median
        # of fewer is one slow step away from any answer.
        while timed < MAX_TIMED_STEPS and (timed < MIN_TIMED_STEPS or time.perf_counter() < deadline):
            if timed >= MIN_PAIRS and time.perf_counter() > deadline + budget_s / 2:
                break  # a busy machine or a big model: stop at the hard limit
            # Interleaved, in alternating order, so that load from elsewhere slows both alike.
            for run in (fp32, bf16) if step % 2 else (bf16, fp32):
                run.step(*batches[step % len(batches)], loss_fn, timed=True)
            step += 1
            timed += 1
        rows = min(len(x), max(batch_size, 1024))
        fp32_loss = fp32.loss(x[:rows], y[:rows], loss_fn)
        bf16_loss = bf16.loss(x[:rows], y[:rows], loss_fn)
    return ProbeMeasurement(
        fp32_step_s=statistics.median(fp32.seconds), bf16_step_s=statistics.median(bf16.seconds),
        fp32_loss=fp32_loss, bf16_loss=bf16_loss, steps=step, timed_steps=timed, batch_size=batch_size,
        threads=torch.get_num_threads(), seconds=time.perf_counter() - started,
        parameters=sum(p.numel() for p in model.parameters()),
        fp32_steps_s=tuple(fp32.seconds), bf16_steps_s=tuple(bf16.seconds),
    )


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Full batches of the user's size from the first rows (rows repeat when there are few)."""
    if len(x) < batch_size:
        reps = -(-batch_size // max(len(x), 1))
        x, y = x.repeat((reps,) + (1,) * (x.dim() - 1)), y.repeat((reps,) + (1,) * (y.dim() - 1))
    count = max(1, min(len(x) // batch_size, WARMUP_STEPS + MAX_TIMED_STEPS))
    return [(x[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(count)]
