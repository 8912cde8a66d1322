"""What a finished search leaves in its directory: JSON results, a trials table, plots.

Every file is written atomically (temp file + rename), so a reader, or a search
killed while writing, never sees half a file.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable

from paratrain.train.checkpoint import save_bytes_atomic, save_json_atomic, save_text_atomic
from paratrain.tune.leaderboard import duration, ranked
from paratrain.tune.study import StudySpec

PLOTS_DIR = "plots"


def best_trial(study: Any) -> Any | None:
    """The best COMPLETE trial; with several objectives, the Pareto-front trial best in the first."""
    trials = study.get_trials(deepcopy=False)
    if len(study.directions) == 1:
        best = ranked(trials)
        return best[0] if best else None
    front = study.best_trials
    return min(front, key=lambda t: (t.values[0], t.number)) if front else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def study_summary(study: Any, spec: StudySpec, wall_seconds: float) -> dict[str, Any]:
    """The content of study.json."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")}
    best = best_trial(study)
    summary: dict[str, Any] = {
        "study_name": study.study_name,
        "objectives": list(spec.objectives),
        "best_value": _finite(best.values[0]) if best else None,
        "best_values": dict(zip(spec.objectives, best.values)) if best else None,
        "best_params": dict(best.params) if best else None,
        "best_trial": best.number if best else None,
        "n_trials": len(trials),
        "n_complete": counts["COMPLETE"],
        "n_pruned": counts["PRUNED"],
        "n_failed": counts["FAIL"],
        "target_trials": spec.trials,
        "wall_seconds": wall_seconds,
        "trial_seconds_total": sum(d for t in trials if not math.isnan(d := duration(t))),
        "sampler": spec.sampler,
        "pruner": spec.pruner,
    }
    if len(spec.objectives) > 1:
        summary["pareto_front"] = [{"trial": t.number, "values": dict(zip(spec.objectives, t.values)),
                                    "params": t.params} for t in study.best_trials]
    return summary


def write_results(study: Any, spec: StudySpec, out_dir: Path, wall_seconds: float) -> tuple[dict[str, Any], list[str]]:
    """study.json, best_params.json, trials.csv and the plots; returns (summary, notes)."""
    summary = study_summary(study, spec, wall_seconds)
    save_json_atomic(summary, out_dir / "study.json")
    if summary["best_params"] is not None:
        save_json_atomic(summary["best_params"], out_dir / "best_params.json")
    frame = study.trials_dataframe()
    save_text_atomic(frame.to_csv(index=False), out_dir / "trials.csv")
    notes = write_plots(study, spec, out_dir / PLOTS_DIR)
    return summary, notes


def write_plots(study: Any, spec: StudySpec, plots_dir: Path) -> list[str]:
    """The four standard plots as PNG; returns a note for each one skipped and why."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    single = len(spec.objectives) == 1
    target = None if single else (lambda t: t.values[0])
    name = spec.objectives[0]
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    makers: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: plots.plot_optimization_history(study, target=target, target_name=name),
        "param_importances": lambda: plots.plot_param_importances(study, target=target, target_name=name),
        "parallel_coordinate": lambda: plots.plot_parallel_coordinate(study, target=target, target_name=name),
        "intermediate_values": lambda: plots.plot_intermediate_values(study),
    }
    notes = []
    for plot, make in makers.items():
        reason = None
        if not complete:
            reason = "no complete trial"
        elif plot == "param_importances" and len(complete) < 2:
            reason = "importances need at least 2 complete trials"
        elif plot == "intermediate_values" and not any(t.intermediate_values for t in trials):
            reason = "no trial reported per-epoch values (scikit-learn models and multi-objective trials report none)"
        if reason is None:
            try:
                with warnings.catch_warnings():
                    # 'experimental' plots, importances warning about rarely drawn conditional
                    # parameters, matplotlib's tight-layout notes on many-axes plots: known,
                    # and not something the user can act on here.
                    warnings.simplefilter("ignore")
                    axes = make()
                    figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
                    figure.set_size_inches(10, 6)
                    buffer = io.BytesIO()
                    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
                plt.close(figure)
                save_bytes_atomic(buffer.getvalue(), plots_dir / f"{plot}.png")
                continue
            except Exception as exc:  # a plot must not fail the search; say why it is missing
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        notes.append(f"skipped {plot}.png: {reason}")
    return notes
