"""PNG plots of bench's rows and of run directories (matplotlib, Agg: no display needed).

Every figure is FIGURE_SIZE pixels exactly (no tight bounding box), so that a report's layout
and the tests can count on it. Each function returns the file it wrote, or None when there is
nothing to draw (no predictions, say).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

from paratrain.bench.analysis import RowResult

FIGURE_SIZE = (960, 540)
"""Width and height of every PNG, in pixels."""
_DPI = 100


def _figure(columns: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(FIGURE_SIZE[0] / _DPI, FIGURE_SIZE[1] / _DPI), dpi=_DPI,
                             squeeze=False)
    return fig, list(axes[0])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from paratrain.train.checkpoint import save_bytes_atomic

    fig.tight_layout()  # arranges inside the figure; the size stays FIGURE_SIZE
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI)
    plt.close(fig)
    save_bytes_atomic(buffer.getvalue(), path)
    return path


def throughput_vs_workers(results: Sequence[RowResult], path: Path) -> Path | None:
    """samples/s against workers, one panel per link, one line per contender (min-max as error bars).

    Every line starts at the 1-worker single row: one process is where each contender scales from."""
    links = list(dict.fromkeys(r.row.link for r in results if r.row.link)) or ["loopback"]
    drawn = [r for r in results if r.samples_per_s and r.row.kind != "probe"]
    if not drawn:
        return None
    fig, axes = _figure(len(links))
    start = [r for r in drawn if r.row.link is None and r.row.workers == 1][:1]
    counts = sorted({r.row.workers for r in drawn})
    for ax, link in zip(axes, links):
        specs = list(dict.fromkeys(r.row.spec for r in drawn if r.row.link in (link, None) and r.row.workers > 1))
        for spec in specs:
            points = start + sorted((r for r in drawn if r.row.spec == spec and r.row.link in (link, None)
                                     and r.row.workers > 1), key=lambda r: r.row.workers)
            xs = [p.row.workers for p in points]
            ys = [p.samples_per_s.median for p in points]
            errors = [[y - p.samples_per_s.low for y, p in zip(ys, points)],
                      [p.samples_per_s.high - y for y, p in zip(ys, points)]]
            ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=spec)
        if start:
            ax.plot([1], [start[0].samples_per_s.median], "ks", label=f"{start[0].row.spec} x1")
        ax.set_xticks(counts)
        ax.set_ylim(bottom=0)
        ax.set_title(f"link: {link}")
        ax.set_xlabel("workers")
        ax.set_ylabel("samples/s")
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def loss_vs_time(results: Sequence[RowResult], path: Path, target: float | None = None) -> Path | None:
    """Validation loss against training seconds (first repetition), one panel per link."""
    links = list(dict.fromkeys(r.row.link for r in results if r.row.link)) or ["loopback"]
    drawn = [r for r in results if r.curves and r.curves[0] and r.row.kind != "ceiling"]
    if not drawn:
        return None
    fig, axes = _figure(len(links))
    for ax, link in zip(axes, links):
        for result in (r for r in drawn if r.row.link in (link, None)):
            xs, ys = zip(*result.curves[0])
            ax.plot(xs, ys, marker=".", label=f"{result.row.spec} x{result.row.workers}")
        if target is not None and math.isfinite(target):
            ax.axhline(target, color="black", linestyle="--", linewidth=0.8, label="target")
        ax.set_yscale("log")
        ax.set_title(f"link: {link}")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def step_breakdown(results: Sequence[RowResult], path: Path) -> Path | None:
    """Stacked bars per row: measured compute and communication seconds per step."""
    drawn = [r for r in results if r.compute_s_per_step is not None]
    if not drawn:
        return None
    fig, (ax,) = _figure()
    labels = [r.row.label for r in drawn]
    compute = [r.compute_s_per_step * 1e3 for r in drawn]
    comm = [(r.comm_s_per_step or 0.0) * 1e3 for r in drawn]
    ax.bar(labels, compute, label="compute (no-comm row)")
    ax.bar(labels, comm, bottom=compute, label="communication (row - compute)")
    ax.set_ylabel("ms per optimizer step")
    ax.tick_params(axis="x", labelrotation=60, labelsize="x-small")
    ax.legend(fontsize="small")
    return _save(fig, path)


def predicted_vs_measured(results: Sequence[RowResult], path: Path) -> Path | None:
    """Predicted against measured step time, with the line of perfect prediction; None without predictions."""
    drawn = [r for r in results if r.predicted_step_s is not None and r.measured_step_s is not None]
    if not drawn:
        return None
    fig, (ax,) = _figure()
    measured = [r.measured_step_s.median * 1e3 for r in drawn]
    predicted = [r.predicted_step_s * 1e3 for r in drawn]
    ax.scatter(measured, predicted)
    for r, x, y in zip(drawn, measured, predicted):
        ax.annotate(r.row.label, (x, y), fontsize="x-small")
    top = max(measured + predicted) * 1.1
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlabel("measured ms per step")
    ax.set_ylabel("predicted ms per step")
    return _save(fig, path)


def run_loss_curves(runs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Validation loss against epoch and against training seconds, one line per run directory."""
    drawn = [run for run in runs if run["records"]]
    if not drawn:
        return None
    fig, (by_epoch, by_time) = _figure(2)
    for run in drawn:
        records = [r for r in run["records"] if r.get("val_loss") is not None]
        seconds, total = [], 0.0
        for record in records:
            total += record.get("train_seconds") or 0.0
            seconds.append(total)
        by_epoch.plot([r["epoch"] for r in records], [r["val_loss"] for r in records], marker=".", label=run["name"])
        by_time.plot(seconds, [r["val_loss"] for r in records], marker=".", label=run["name"])
    for ax, label in ((by_epoch, "epoch"), (by_time, "training seconds")):
        ax.set_xlabel(label)
        ax.set_ylabel("validation loss")
        ax.set_yscale("log")
        ax.legend(fontsize="x-small")
    return _save(fig, path)


def run_throughput(runs: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """samples/s of each run directory (its summary's), as bars."""
    drawn = [run for run in runs if run["summary"].get("samples_per_s")]
    if not drawn:
        return None
    fig, (ax,) = _figure()
    ax.bar([run["name"] for run in drawn], [run["summary"]["samples_per_s"] for run in drawn])
    ax.set_ylabel("samples/s")
    ax.tick_params(axis="x", labelrotation=30, labelsize="small")
    return _save(fig, path)
