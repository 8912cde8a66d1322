"""Reports as data, then as Markdown or as one self-contained HTML page.

A ``Report`` is a title and sections of paragraphs, one table and images; ``to_markdown``
references the PNGs beside it, ``to_html`` embeds them (base64), so the page can be mailed on
its own. Bench's report and ``paratrain report`` on run directories both build one.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from paratrain.bench.analysis import RowResult, Spread, winner


@dataclass
class Section:
    heading: str
    paragraphs: list[str] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        for section in self.sections:
            lines += [f"## {section.heading}", ""]
            for paragraph in section.paragraphs:
                lines += [paragraph, ""]
            if section.header:
                lines.append("| " + " | ".join(section.header) + " |")
                lines.append("|" + "---|" * len(section.header))
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in section.rows]
                lines.append("")
            lines += [f"![{image.stem}]({image.name})" for image in section.images]
            if section.images:
                lines.append("")
        return "\n".join(lines)

    def to_html(self) -> str:
        out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{html.escape(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
               "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
               "img{max-width:100%}</style>", "</head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for section in self.sections:
            out.append(f"<h2>{html.escape(section.heading)}</h2>")
            out += [f"<p>{html.escape(paragraph)}</p>" for paragraph in section.paragraphs]
            if section.header:
                out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in section.header)
                           + "</tr></thead><tbody>")
                out += ["<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                        for row in section.rows]
                out.append("</tbody></table>")
            for image in section.images:
                data = base64.b64encode(Path(image).read_bytes()).decode("ascii")
                out.append(f"<p><img alt=\"{html.escape(image.stem)}\" src=\"data:image/png;base64,{data}\"></p>")
        out.append("</body></html>")
        return "\n".join(out)


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return "never" if math.isinf(value) else f"{value:.3g}"


def spread(value: Spread | None, scale: float = 1.0, digits: str = ".3g") -> str:
    """'median (min-max)'; '-' when there is no figure."""
    if value is None:
        return "-"

    def one(v: float) -> str:
        return "never" if math.isinf(v) else format(v * scale, digits)

    if value.low == value.high:
        return one(value.median)
    return f"{one(value.median)} ({one(value.low)}-{one(value.high)})"


def byte_size(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


BENCH_COLUMNS = ["row", "workers", "link", "samples/s", "time to target s", "converged", "final val loss",
                 "scaling eff.", "step ms", "predicted ms", "compute ms", "comm ms", "comm bytes/step",
                 "peak memory", "ties with"]


MEMORY_COLUMNS = ["row", "workers", "parameters", "gradients", "optimizer state", "activations (est.)",
                  "model state", "peak (measured)", "pipeline bubble: expected / idle per stage"]


def memory_table(results: Sequence[RowResult]) -> list[list[str]]:
    """Per row, the memory of its rank holding the most model state, and a pipeline's bubble."""
    rows = []
    for r in results:
        m = r.memory
        if m is None:
            continue
        bubble = "-"
        if r.pipeline:
            expected = r.pipeline.get("bubble_expected")
            idle = r.pipeline.get("idle_fraction") or []
            bubble = (f"{expected:.0%}" if expected is not None else "-") + " / " + (
                ", ".join("-" if v is None else f"{v:.0%}" for v in idle) if idle else "-")
        rows.append([r.row.spec, str(r.row.workers), byte_size(m.get("parameters_bytes")),
                     byte_size(m.get("gradients_bytes")), byte_size(m.get("optimizer_bytes")),
                     byte_size(m.get("activations_bytes")), byte_size(m.get("model_state_bytes")),
                     byte_size(m.get("peak_bytes")), bubble])
    return rows


def time_to_target_cell(result: RowResult, budget: float | None) -> str:
    value = result.time_to_target_s
    if value is None:
        return "-"
    if math.isinf(value.median):
        if result.errors:
            return "diverged"
        return f">= {budget:g} (budget)" if result.budget_hit and budget else "not reached"
    return spread(value)


def bench_table(results: Sequence[RowResult], repeat: int, budget: float | None) -> list[list[str]]:
    rows = []
    for r in results:
        reached = sum(math.isfinite(v) for v in r.reps_time_to_target_s)
        ceiling = r.row.kind == "ceiling"  # models that never averaged: only speed means something
        rows.append([
            r.row.spec + {"ceiling": " (ceiling)", "reference": " (reference)", "probe": " (probe)"}.get(r.row.kind, ""),
            str(r.row.workers), r.row.link or "-", spread(r.samples_per_s, digits=",.0f"),
            "-" if ceiling else time_to_target_cell(r, budget),
            "-" if ceiling else f"{'yes' if r.converged else 'no'} ({reached}/{len(r.reps_time_to_target_s)})",
            "-" if ceiling or r.final_val_loss is None else f"{r.final_val_loss:.4g}",
            "-" if r.scaling_efficiency is None else f"{r.scaling_efficiency:.0%}",
            spread(r.measured_step_s, 1e3), "-" if r.predicted_step_s is None else f"{r.predicted_step_s * 1e3:.3g}",
            "-" if r.compute_s_per_step is None else f"{r.compute_s_per_step * 1e3:.3g}",
            "-" if r.comm_s_per_step is None else f"{r.comm_s_per_step * 1e3:.3g}",
            byte_size(r.comm_bytes_per_step), byte_size(r.peak_memory_bytes), ", ".join(r.ties) or "-"])
    return rows


def verdicts(groups: dict[str, list[RowResult]]) -> list[str]:
    """Per link, who reaches the target first, or which rows tie for first."""
    out = []
    for link, group in groups.items():
        spreads = {r.row.label: r.time_to_target_s for r in group if r.time_to_target_s is not None}
        if not spreads:
            continue
        best, tied = winner(spreads)
        if best is None:
            out.append(f"{link}: no row reached the target.")
        elif tied:
            out.append(f"{link}: {', '.join([best, *tied])} tie for the shortest time to target (their min-max "
                       f"spreads overlap; median of {best}: {seconds(spreads[best].median)} s).")
        else:
            out.append(f"{link}: {best} reaches the target first ({spread(spreads[best])} s), its spread clear "
                       "of every other row's.")
    return out
