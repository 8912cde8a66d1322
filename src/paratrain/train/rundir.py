"""The run directory: what a run writes and where."""

from __future__ import annotations

import datetime
import logging
import re
from pathlib import Path

import yaml

from paratrain.config import FitConfig, load_yaml
from paratrain.errors import ConfigError
from paratrain.train.checkpoint import TEMP_SUFFIX, save_text_atomic
from paratrain.train.runlock import LOCK_FILE

log = logging.getLogger("paratrain")

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
ONNX_FILE = "model.onnx"
"""`paratrain export --format onnx`: the network; model.onnx.json and model.onnx.md document its encoding."""
INT8_FILE = "model.int8.onnx"
"""`paratrain quantize`: the int8 network (ONNX Runtime), read by `predict --quantized`."""
INT8_INFO_FILE = "model.int8.json"
"""How model.int8.onnx was made (mode, calibration, hashes); written last, so it marks a finished quantize."""


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


_RANK_CHECKPOINT = re.compile(r"checkpoint\.rank\d+\.pt")


def _is_temp_file(name: str) -> bool:
    """A temp file of the atomic writer (train/checkpoint.py): ``.<target>.<random>.tmp``."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _is_leftover(name: str) -> bool:
    """What a run that failed before its first checkpoint may leave: nothing worth keeping.

    Other hidden files (a lock, say) are the run's own and do not make the directory a result.
    """
    return name in (CONFIG_FILE, METRICS_FILE) or bool(_RANK_CHECKPOINT.fullmatch(name)) or name.startswith(".")


def is_reusable(path: Path) -> bool:
    """True for a directory a new run may take over: empty, or left by a run that failed before
    its first checkpoint (config.yaml, maybe metrics.jsonl; no checkpoint.pt, no model.pt)."""
    return path.is_dir() and all(_is_leftover(entry.name) for entry in path.iterdir())


def check_new_run_dir(path: Path) -> None:
    """A new run never writes into a directory that holds results or files of the user's."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory '{path}' is a file; choose another --out")
    if path.exists() and not is_reusable(path):
        if (path / CONFIG_FILE).is_file() and (path / CHECKPOINT_FILE).is_file():
            hint = f"continue that run with --resume {path}, or choose another --out"
        else:
            hint = "choose another --out"
        raise ConfigError(f"run directory '{path}' already exists and is not empty; {hint}")


def make_run_dir(path: Path) -> Path | None:
    """Create the run directory, or take over one that :func:`is_reusable` allows.

    Returns the topmost directory this call created (None if it existed), so that a run
    failing before it wrote anything can remove exactly what it made. An OSError (a read-only
    place, a path under a file) becomes a one-line ConfigError naming the path.
    """
    created = None
    for folder in reversed((path, *path.parents)):
        if not folder.exists():
            created = folder
            break
    try:
        if created is None:
            _clear_leftovers(path)
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error("run directory", path, exc) from None
    return created


def _clear_leftovers(path: Path) -> None:
    """Empty a reused directory of the failed run's files, so the new run starts clean."""
    removed = []
    for entry in path.iterdir():
        if entry.name in (METRICS_FILE, CONFIG_FILE) or _RANK_CHECKPOINT.fullmatch(entry.name) or _is_temp_file(entry.name):
            entry.unlink()
            removed.append(entry.name)
    if removed:
        log.info("reusing run directory %s: it held no checkpoint (removed %s)", path, ", ".join(sorted(removed)))


def remove_if_unstarted(path: Path, created: Path | None) -> None:
    """After a failure: remove the run directory if this run created it and wrote nothing but
    its config (and temp files) there; with metrics.jsonl it stays, for the user to read, and a
    rerun with the same --out reuses it."""
    if created is None or not path.is_dir():
        return
    entries = list(path.iterdir())
    # The run's lock file goes too: its holder is this process, which is giving the directory up.
    if not all(entry.name in (CONFIG_FILE, LOCK_FILE) or _is_temp_file(entry.name) for entry in entries):
        return
    try:
        for entry in entries:
            entry.unlink()
        # The run directory and the parents this run made, up to the first that held something.
        for folder in (path, *path.parents):
            folder.rmdir()
            if folder == created:
                break
    except OSError:
        pass  # a folder that is not empty (another process wrote there) is not ours to remove


def remove_temp_files(run_dir: Path) -> list[str]:
    """Delete temp files of writes that a killed process never finished; returns their names.

    Only safe while no process writes in ``run_dir`` (at the start of a resume)."""
    removed = []
    for entry in Path(run_dir).iterdir():
        if _is_temp_file(entry.name) and entry.is_file():
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


def output_error(what: str, path: Path, exc: OSError) -> ConfigError:
    """One line for an output that cannot be written: the path and the system's reason."""
    reason = exc.strerror or str(exc)
    # mkdir under a file says "File exists" or "Not a directory": name the file instead.
    blocker = next((parent for parent in Path(path).parents if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        reason = f"'{blocker}' is a file, not a folder"
    return ConfigError(f"cannot write the {what} '{path}': {reason}; choose another place")


def write_config(run_dir: Path, config: FitConfig) -> None:
    save_text_atomic(yaml.safe_dump(config.to_dict(), sort_keys=False), run_dir / CONFIG_FILE)


def read_config(run_dir: Path) -> FitConfig:
    """The resolved config stored in a run directory."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"'{run_dir}' is not a paratrain run directory: it has no {CONFIG_FILE}")
    return FitConfig.from_dict(load_yaml(path))


RESTART_NEW = "new"
RESTART_RESUME = "resume"
RESTART_FINISHED = "finished"

_PER_SESSION = ("stop_after",)
"""Config fields that belong to one session, not to the run: a resume resets them (fit.resume)."""


def restart_plan(path: Path, config: FitConfig) -> str:
    """What a worker that torchrun restarted does with the run directory it finds at ``path``.

    RESTART_RESUME: ``path`` holds this run (its config.yaml equals ``config``, as ``--resume``
    would continue it) and a checkpoint; RESTART_FINISHED: this run finished there already (the
    group died after its summary was written); RESTART_NEW: no checkpoint yet, the run starts over
    in the same directory (a new run's checks apply). A directory holding another run is a
    ConfigError.

    Every rank must decide alike without talking, so this reads only files that rank 0 writes
    atomically and that no rank changes before the group has formed again: checkpoint.pt,
    summary.json and, when one of them is there, config.yaml.
    """
    has_checkpoint = (path / CHECKPOINT_FILE).is_file()
    has_summary = (path / SUMMARY_FILE).is_file()
    if not has_checkpoint and not has_summary:
        return RESTART_NEW
    _check_same_run(path, config)
    if has_summary:
        import json

        summary = json.loads((path / SUMMARY_FILE).read_text())
        if summary.get("status") == "finished":
            return RESTART_FINISHED
    return RESTART_RESUME if has_checkpoint else RESTART_NEW


def _check_same_run(path: Path, config: FitConfig) -> None:
    """ConfigError unless ``path``'s config.yaml describes the run ``config`` describes."""
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"run directory '{path}' holds a checkpoint or summary but no {CONFIG_FILE}: it is not "
                          "this run's; choose another --out")
    stored = read_config(path).to_dict()
    # Round-trip the new config as stored, so that only real differences count.
    wanted = FitConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))).to_dict()
    differences = [f"{section}.{key}: {stored[section].get(key)!r} there, {value!r} now"
                   for section, fields in wanted.items() for key, value in fields.items()
                   if key not in _PER_SESSION and stored.get(section, {}).get(key) != value]
    if differences:
        raise ConfigError(f"run directory '{path}' holds another run (its config differs: "
                          f"{'; '.join(differences[:3])}); a restarted worker resumes only its own run: "
                          "choose another --out")
