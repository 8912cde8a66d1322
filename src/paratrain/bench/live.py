"""Bench's progress on stderr: a table redrawn in place on a terminal, one line per run elsewhere."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


class LiveTable:
    """A measurement.Progress: each row's state (waiting, running, its figures), and an ETA."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.states: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.started = time.perf_counter()
        self.total = 0
        self.done = 0
        self.drawn = 0

    def __call__(self, event: str, figures: dict[str, Any]) -> None:
        if event == "start":
            self.total = figures["runs"]
            for row in figures["rows"]:
                self.states[row.key], self.labels[row.key] = "waiting", row.label
            self._line(f"bench: {len(figures['rows'])} rows x {figures['repeat']} repetition(s) = {self.total} runs")
        elif event == "run":
            row = figures["row"]
            self.states[row.key] = f"rep {figures['rep'] + 1}: running"
            if self.interactive:
                self._draw()
        elif event == "done":
            self.done = figures["index"]
            row, run = figures["row"], figures["run"]
            self.states[row.key] = f"rep {figures['rep'] + 1}: {_figures(run)}"
            if self.interactive:
                self._draw()
            else:
                self._line(f"[{self.done}/{self.total}] {row.label} rep {figures['rep'] + 1}: {_figures(run)}; "
                           f"ETA {self._eta()}")

    def _eta(self) -> str:
        if not self.done:
            return "?"
        left = (time.perf_counter() - self.started) / self.done * (self.total - self.done)
        return f"{left:.0f} s" if left < 120 else f"{left / 60:.1f} min"

    def _draw(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # back to the table's first line, clear below
        width = max(map(len, self.labels.values()), default=10)
        lines = [f"{self.labels[key]:<{width}}  {state}" for key, state in self.states.items()]
        lines.append(f"{self.done}/{self.total} runs, {time.perf_counter() - self.started:.0f} s, ETA {self._eta()}")
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()
        self.drawn = len(lines)

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _figures(run: Any) -> str:
    records = run.records
    rates = [r["samples_per_s"] for r in records[1:] or records if r.get("samples_per_s")]
    rate = f"{sorted(rates)[len(rates) // 2]:,.0f} samples/s" if rates else "- samples/s"
    loss = run.final_val_loss
    loss_text = "-" if loss is None or not math.isfinite(loss) else f"{loss:.4g}"
    budget = ", stopped by the budget" if run.budget_hit else ""
    if run.error:
        budget += f", {run.error}"
    return f"{rate}, val_loss {loss_text}, {run.wall_seconds:.1f} s{budget}"
