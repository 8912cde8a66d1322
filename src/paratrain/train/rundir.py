"""The run directory: what a run writes and where."""

from __future__ import annotations

import datetime
from pathlib import Path

import yaml

from paratrain.config import FitConfig, load_yaml
from paratrain.errors import ConfigError
from paratrain.train.checkpoint import save_text_atomic

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def rank_checkpoint_file(rank: int) -> str:
    """The checkpoint of rank ``rank``'s own model and optimizer (strategies whose workers' models differ)."""
    return f"checkpoint.rank{rank}.pt"


def default_run_dir(strategy: str, root: str | Path = "runs") -> Path:
    """runs/<date>-<time>-<strategy>, with a suffix if that exists already."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{strategy.replace(':', '-')}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def check_new_run_dir(path: Path) -> None:
    """A new run never writes into a directory that holds something already."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"run directory '{path}' already exists and is not empty; choose another --out, "
            f"or continue that run with --resume {path}"
        )


def write_config(run_dir: Path, config: FitConfig) -> None:
    save_text_atomic(yaml.safe_dump(config.to_dict(), sort_keys=False), run_dir / CONFIG_FILE)


def read_config(run_dir: Path) -> FitConfig:
    """The resolved config stored in a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' is not a paratrain run directory: it has no {CONFIG_FILE}")
    return FitConfig.from_dict(load_yaml(path))
