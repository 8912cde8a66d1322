"""`paratrain report RUN_DIR...`: any run directories side by side, with bench's report code.

Reads each directory's metrics.jsonl (one record per epoch) and summary.json, and writes
report.md, report.html and the PNGs into the output folder.

Example:
    >>> write_run_report(["runs/a", "runs/b"], "report-out")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from paratrain.bench import plots
from paratrain.bench.render import Report, Section, byte_size
from paratrain.errors import ConfigError

COLUMNS = ["run", "strategy", "workers", "epochs", "final val loss", "best val loss", "samples/s", "training s",
           "wall s", "comm bytes/step", "peak memory"]


def read_run_dir(path: str | os.PathLike) -> dict[str, Any]:
    """A run directory's records, summary and name; ConfigError (one line) when it is not one."""
    from paratrain.train import rundir

    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"run directory {str(path)!r} must exist; no such directory")
    metrics, summary = folder / rundir.METRICS_FILE, folder / rundir.SUMMARY_FILE
    if not metrics.is_file() and not summary.is_file():
        raise ConfigError(f"run directory {str(path)!r} must hold {rundir.METRICS_FILE} or {rundir.SUMMARY_FILE} "
                          "(written by paratrain fit); it has neither")
    try:
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] \
            if metrics.is_file() else []
        data = json.loads(summary.read_text()) if summary.is_file() else {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"run directory {str(path)!r}: cannot read its metrics ({error})") from None
    return {"name": folder.resolve().name, "path": str(folder), "records": records, "summary": data}


def write_run_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> Report:
    """Read every run directory (all before writing anything), then write the report into ``out``."""
    from paratrain.train.checkpoint import save_text_atomic

    runs = [read_run_dir(path) for path in paths]
    seen: dict[str, int] = {}
    for run in runs:  # two runs both called 'ddp' (in different folders) stay apart in the legends
        seen[run["name"]] = seen.get(run["name"], 0) + 1
        if seen[run["name"]] > 1:
            run["name"] = f"{run['name']} ({seen[run['name']]})"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images = [plots.run_loss_curves(runs, out / "loss_curves.png"), plots.run_throughput(runs, out / "throughput.png")]
    report = Report("paratrain runs", [
        Section("Summary", [f"{len(runs)} run director{'y' if len(runs) == 1 else 'ies'}: "
                            + ", ".join(run["path"] for run in runs)], COLUMNS, [_row(run) for run in runs]),
        Section("Plots", [], images=[image for image in images if image is not None]),
    ])
    save_text_atomic(report.to_markdown(), out / "report.md")
    save_text_atomic(report.to_html(), out / "report.html")
    return report


def _row(run: dict[str, Any]) -> list[str]:
    summary, records = run["summary"], run["records"]
    last = records[-1] if records else {}

    def number(value: Any, fmt: str) -> str:
        return "-" if not isinstance(value, (int, float)) else format(value, fmt)

    return [run["name"], str(summary.get("strategy", "-")), str(summary.get("workers", "-")),
            str(summary.get("epochs", len(records))), number(summary.get("val_loss", last.get("val_loss")), ".4g"),
            number(summary.get("best_val_loss"), ".4g"), number(summary.get("samples_per_s"), ",.0f"),
            number(summary.get("train_seconds"), ".1f"), number(summary.get("wall_seconds"), ".1f"),
            byte_size(summary.get("comm_bytes_per_step")),
            byte_size(summary.get("peak_memory_bytes", last.get("peak_memory_bytes")))]
