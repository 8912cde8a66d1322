"""Per-epoch metrics: computing them from reduced sums, and the metrics.jsonl log."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from paratrain.train.checkpoint import dumps_strict, save_text_atomic

# Index of each sum in the vector that evaluation all-reduces in one call.
LOSS_SUM, COUNT, SSE, SUM_Y, SUM_Y2, CORRECT = range(6)


def evaluation_sums(
    model: torch.nn.Module, forward, x: torch.Tensor, y: torch.Tensor, task: str, batch_size: int, autocast
) -> torch.Tensor:
    """Sums over this rank's rows that add up across ranks into exact global metrics.

    ``forward`` maps rows to outputs (``Strategy.eval_forward``: the model itself, or a pipeline's
    schedule), or to None on a rank that has no outputs; ``model`` is put in eval mode meanwhile."""
    sums = torch.zeros(6, dtype=torch.float64)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            with autocast():
                out = forward(xb)
            if out is None:
                continue
            out = out.float()
            if task == "classification":
                sums[LOSS_SUM] += torch.nn.functional.cross_entropy(out, yb, reduction="sum").double()
                sums[CORRECT] += (out.argmax(dim=1) == yb).sum()
            else:
                err = (out.squeeze(-1) - yb).double()
                sums[SSE] += (err * err).sum()
                sums[LOSS_SUM] += (err * err).sum()
                sums[SUM_Y] += yb.double().sum()
                sums[SUM_Y2] += (yb.double() ** 2).sum()
            sums[COUNT] += len(xb)
    model.train(was_training)
    return sums


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak memory so far: allocated CUDA memory on a GPU; on Linux the peak resident
    set of this process's own memory (VmHWM), else ru_maxrss (KiB on Linux, bytes on macOS).

    Not ru_maxrss on Linux: it survives fork and exec, so every worker launched from a large
    process would report at least that process's peak. In a process that ran other work first
    (a one-process run inside a benchmark) the peak covers that work too."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # POSIX only: here, where nothing better was found

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


R2_UNDEFINED = "the validation target is constant: R² is undefined"


def metrics_from_sums(sums: torch.Tensor, task: str, target_scale: float) -> dict[str, Any]:
    """val_loss and val_r2 (regression, plus val_rmse in target units) or val_accuracy."""
    count = float(sums[COUNT])
    if count == 0:
        return {}
    out = {"val_loss": float(sums[LOSS_SUM]) / count}
    if task == "classification":
        out["val_accuracy"] = float(sums[CORRECT]) / count
    else:
        total = float(sums[SUM_Y2]) - float(sums[SUM_Y]) ** 2 / count
        # R^2 is unchanged by the affine target standardization, so the
        # standardized sums give the R^2 of the original target.
        if total > 0:
            out["val_r2"] = 1.0 - float(sums[SSE]) / total
        else:
            # JSON has no NaN: say null, and why.
            out["val_r2"] = None
            out["val_r2_note"] = R2_UNDEFINED
        out["val_rmse"] = math.sqrt(float(sums[SSE]) / count) * target_scale
    return out


class MetricsLog:
    """metrics.jsonl: one strict JSON object per epoch (null for a non-finite number), appended as training goes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def truncate_after(self, epoch: int) -> None:
        """On resume, drop lines for epochs the checkpoint does not cover."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] <= epoch]
        save_text_atomic("".join(line + "\n" for line in kept), self.path)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as handle:
            # Strict JSON: a NaN or infinity is written as null, never as a bare NaN token.
            handle.write(dumps_strict(record) + "\n")

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
