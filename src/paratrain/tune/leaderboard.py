"""Live progress of a search: one line per finished trial, a leaderboard table, an ETA.

One dense line per trial suits logs and CI; in a terminal a top-5 table is
also shown every few trials. Everything goes to stderr; the final summary to stdout.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Sequence, TextIO


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4g}"
    return str(value)


def format_params(params: dict[str, Any]) -> str:
    return " ".join(f"{name}={format_value(value)}" for name, value in params.items())


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def duration(trial: Any) -> float:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return math.nan


def ranked(trials: Sequence[Any]) -> list[Any]:
    """COMPLETE trials, best (lowest first value) first."""
    complete = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    return sorted(complete, key=lambda t: (t.values[0], t.number))


class Leaderboard:
    """Prints each trial as it finishes, with the best so far and the time left."""

    def __init__(self, target: int, objective_names: Sequence[str], stream: TextIO | None = None,
                 enabled: bool = True, table_every: int = 10) -> None:
        self.target = target
        self.names = list(objective_names)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.table_every = table_every
        self.seen: set[int] = set()
        self.session_start = time.monotonic()
        self.done_before = 0
        self.done_now = 0

    def start(self, trials: Sequence[Any]) -> None:
        """Remember what an earlier session finished, so that the ETA counts only this one."""
        finished = [t for t in trials if t.state.is_finished()]
        self.seen = {t.number for t in finished}
        self.done_before = sum(t.state.name in ("COMPLETE", "PRUNED") for t in finished)
        self.session_start = time.monotonic()
        if finished and self.enabled:
            states = {s: sum(t.state.name == s for t in finished) for s in ("COMPLETE", "PRUNED", "FAIL")}
            self._print(f"continuing the study: {states['COMPLETE']} complete, {states['PRUNED']} pruned, "
                        f"{states['FAIL']} failed trial(s) so far; target {self.target}")

    def update(self, trials: Sequence[Any]) -> None:
        """Print a line for every trial that finished since the last call."""
        new = sorted((t for t in trials if t.state.is_finished() and t.number not in self.seen),
                     key=lambda t: t.number)
        for trial in new:
            self.seen.add(trial.number)
            if trial.state.name in ("COMPLETE", "PRUNED"):
                self.done_now += 1
            if self.enabled:
                self._print(self.line(trial, trials))
                if self.interactive and self.done_now and self.done_now % self.table_every == 0:
                    self._print(self.table(trials, top=5))

    def line(self, trial: Any, trials: Sequence[Any]) -> str:
        done = self.done_before + self.done_now
        width = len(str(self.target))
        state = trial.state.name
        if state == "COMPLETE":
            value = "  ".join(f"{n}={format_value(v)}" for n, v in zip(self.names, trial.values))
        elif state == "PRUNED":
            steps = trial.intermediate_values
            value = f"pruned at epoch {max(steps)}" if steps else "pruned"
        else:
            value = trial.user_attrs.get("failed_because") or trial.user_attrs.get("error") or "failed"
        best = ranked(trials)
        best_text = f"best {format_value(best[0].values[0])} (#{best[0].number})" if best else "best -"
        return (f"[{done:>{width}}/{self.target}] trial {trial.number:>3} {state:<8} {value}  {best_text}  "
                f"{format_seconds(duration(trial))}  | {format_params(trial.params)}  | ETA {self.eta(done)}")

    def eta(self, done: int) -> str:
        remaining = max(0, self.target - done)
        if remaining == 0:
            return "0s"
        if self.done_now == 0:
            return "?"
        elapsed = time.monotonic() - self.session_start
        return format_seconds(elapsed / self.done_now * remaining)

    def table(self, trials: Sequence[Any], top: int = 10) -> str:
        """The best ``top`` complete trials as an aligned text table."""
        rows = [["rank", "trial", *self.names, "state", "seconds", "params"]]
        for rank, trial in enumerate(ranked(trials)[:top], start=1):
            rows.append([str(rank), str(trial.number), *[format_value(v) for v in trial.values],
                         trial.state.name, format_seconds(duration(trial)), format_params(trial.params)])
        if len(rows) == 1:
            return "leaderboard: no complete trial yet"
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in rows]
        return "leaderboard:\n" + "\n".join("  " + line for line in lines)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
