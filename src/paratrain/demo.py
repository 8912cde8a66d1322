"""The demo job: synthetic Friedman #1 data, trained with `single` and with `ddp`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def friedman1_frame(rows: int, seed: int = 0, noise: float = 1.0) -> pd.DataFrame:
    """Friedman #1 regression data (scikit-learn's generator) as a table with columns x0..x9, y."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=rows, n_features=10, noise=noise, random_state=seed)
    frame = pd.DataFrame(x.astype(np.float32), columns=[f"x{i}" for i in range(x.shape[1])])
    frame["y"] = y.astype(np.float32)
    return frame


def run_demo(out: str | Path, rows: int = 20000, workers: int = 2, epochs: int = 5) -> list[dict]:
    """Write the data to OUT/friedman1.csv and train on it twice; return both summaries."""
    import shutil

    from paratrain.config import FitConfig
    from paratrain.train.fit import fit

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "friedman1.csv"
    friedman1_frame(rows).to_csv(data_path, index=False)
    print(f"demo: wrote {rows} rows of Friedman #1 data to {data_path}")
    summaries = []
    for strategy, n in (("single", 1), ("ddp", workers)):
        run_dir = out / f"run-{strategy}"
        if run_dir.exists():
            shutil.rmtree(run_dir)  # the demo's own folder: re-running it starts over
        config = FitConfig.from_dict({
            "path": str(data_path), "target": "y", "hidden": [256, 256], "epochs": epochs,
            "schedule": "cosine", "lr": 3e-3, "strategy": strategy, "workers": n, "out": str(run_dir),
        })
        print(f"demo: training an MLP 256-256 with strategy={strategy}, workers={n}")
        summary = fit(config).summary
        summaries.append(summary)
        print(f"demo: {strategy}: val_r2={summary['val_r2']:.4f} samples/s={summary['samples_per_s']:.0f} "
              f"precision={summary.get('precision', 'fp32')} "
              f"wall={summary['wall_seconds']:.1f}s (start-up {summary['startup_seconds']:.1f}s, "
              f"training {summary['train_seconds']:.1f}s) -> {run_dir}")
    _print_advice(config, workers)
    return summaries


def _print_advice(config, workers: int) -> None:
    """End with the advisor's answer for this machine: why ddp was (or was not) faster, and
    from how many machines data parallelism would pay. Advice is a bonus: if it fails, the
    demo's training results still stand, so the failure is one line, not a traceback."""
    from paratrain.costmodel.advise import advise_for_config, format_advice
    from paratrain.data.prepare import load_frame
    from paratrain.errors import ParatrainError

    print(f"demo: which strategy pays off for this model on this machine (paratrain advise --workers {workers}):")
    try:
        advice, _ = advise_for_config(config, load_frame(config.data.path), workers)
    except (ParatrainError, OSError, RuntimeError) as exc:
        print(f"demo: no advice: {exc}")
        return
    print(format_advice(advice))
    print("demo: measure your own workload with `paratrain bench`; predict more workers or machines with "
          "`paratrain calibrate` then `paratrain advise --workers N --bandwidth 10gbit`")
