"""Experiment tracking: a run logged to MLflow or TensorBoard besides its run directory.

``fit --tracking mlflow`` logs the flattened config as parameters, every epoch's
metrics (train/val loss, samples/s, bytes per step, ...) with the epoch as step,
the summary's figures as ``final_*`` metrics, and the run directory as artifacts
under ``run_dir/``, to a local MLflow store (``<run_dir>/mlruns`` unless
``tracking_uri`` says otherwise). ``--tracking tensorboard`` writes event files
(``<run_dir>/tensorboard`` by default): the same metrics as scalars, the config
and the summary as text.

Only the process that owns the run directory (rank 0) tracks. The tracker run is
opened before the workers start, so a bad store fails at once; per-epoch metrics
are logged from rank 0's worker process by a picklable epoch callback; the
artifacts and the final status are logged when the run ends. A tracker that stops
answering mid-run costs a warning, not the training.

Example:
    >>> from paratrain.config import FitConfig
    >>> params = flat_params(FitConfig.from_dict({"hidden": [8, 8], "lr": 0.01}))
    >>> params["model.hidden"], params["optim.lr"]
    ('[8, 8]', '0.01')
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.train.runlock import LOCK_FILE

log = logging.getLogger("paratrain")

EXTRA_HINT = "pip install 'paratrain[tracking]'"
EXPERIMENT = "paratrain"
"""The MLflow experiment every run goes to."""
_PACKAGES = {"mlflow": ("mlflow", "mlflow-skinny"), "tensorboard": ("tensorboard", "tensorboard")}
"""tracker -> (module to import, package that provides it)."""


def check_tracking(config: FitConfig) -> None:
    """Fail before any directory is made when the tracker's package is missing."""
    kind = config.output.tracking
    if kind is None:
        return
    module, package = _PACKAGES[kind]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"tracking={kind!r} needs the package {package}, which is not installed; install the "
                          f"optional extra: {EXTRA_HINT} (or pip install {package})")


def flat_params(config: FitConfig) -> dict[str, str]:
    """The config as 'section.field' -> text (MLflow parameters are text)."""
    return {f"{section}.{key}": _text(value) for section, fields in config.to_dict().items()
            for key, value in fields.items()}


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def numeric_metrics(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics record or summary (epoch counters, text and None left out)."""
    return {f"{prefix}{key}": float(value) for key, value in record.items()
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value)}


class Tracker:
    """One tracked run, held by the process that dispatches the workers."""

    def epoch_logger(self) -> Any:
        """A picklable epoch callback (train.loop.EpochCallback) that logs each epoch's record."""
        raise NotImplementedError

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        """Log the summary (and artifacts) and close the run."""

    def fail(self) -> None:
        """Mark the run failed."""


def open_tracker(config: FitConfig, run_dir: Path, resume: bool) -> Tracker | None:
    """The tracker ``config.output.tracking`` asks for, its run opened; None without one."""
    if config.output.tracking is None:
        return None
    check_tracking(config)
    if config.output.tracking == "mlflow":
        return MlflowTracker(config, run_dir, resume)
    return TensorBoardTracker(config, run_dir)


class NoEpochLogger:
    """Stands in for the epoch logger on ranks that do not track: under torchrun every rank
    must hold the same number of callbacks, since asking them is a collective (train.loop)."""

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        return False


# ---------------------------------------------------------------------------- MLflow


def mlflow_uri(given: str | None, run_dir: Path) -> str:
    """The tracking URI: given, a plain path made a file: URI, or <run_dir>/mlruns."""
    if given is None:
        return (Path(run_dir) / "mlruns").resolve().as_uri()
    scheme = urlparse(given).scheme
    if not scheme or len(scheme) == 1:  # a path ('1' letter: a Windows drive)
        return Path(given).expanduser().resolve().as_uri()
    return given


def _allow_file_store(uri: str) -> None:
    # MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE is set (it wants a database);
    # mlflow-skinny has no database backend, and a local folder is what was asked for. A user's
    # own setting of the variable wins.
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _mlflow_client(uri: str):
    _allow_file_store(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


class MlflowTracker(Tracker):
    """A run in the 'paratrain' experiment of the store at ``tracking_uri``."""

    def __init__(self, config: FitConfig, run_dir: Path, resume: bool) -> None:
        from mlflow.entities import Param

        self.uri = mlflow_uri(config.output.tracking_uri, run_dir)
        self.store_dir = Path(urlparse(self.uri).path) if self.uri.startswith("file:") else None
        try:
            client = _mlflow_client(self.uri)
            experiment = client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
            tags = {"paratrain.run_dir": str(Path(run_dir).resolve()), "paratrain.resumed": str(resume).lower()}
            run = client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
            self.run_id = run.info.run_id
            params = [Param(key, value) for key, value in flat_params(config).items()]
            client.log_batch(self.run_id, params=params)
        except Exception as exc:  # any store error: one line naming the URI
            raise ConfigError(f"tracking_uri={self.uri!r}: MLflow cannot log there: {_first_line(exc)}") from None
        log.info("tracking to MLflow: %s, experiment %r, run %s", self.uri, EXPERIMENT, self.run_id)

    def epoch_logger(self) -> "MlflowEpochLogger":
        return MlflowEpochLogger(self.uri, self.run_id)

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        from mlflow.entities import Metric

        try:
            client = _mlflow_client(self.uri)
            metrics = numeric_metrics(summary, prefix="final_")
            client.log_batch(self.run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in metrics.items()])
            client.set_tag(self.run_id, "paratrain.status", str(summary.get("status")))
            self._log_run_dir(client, Path(run_dir))
            client.set_terminated(self.run_id, "FINISHED")
        except Exception as exc:
            log.warning("MLflow run %s at %s was not completed: %s", self.run_id, self.uri, _first_line(exc))

    def _log_run_dir(self, client, run_dir: Path) -> None:
        """Every file of the run directory under 'run_dir/', less the store itself and the lock."""
        skip = {LOCK_FILE}
        for entry in sorted(run_dir.iterdir()):
            if entry.name in skip or (self.store_dir is not None and _same_or_inside(self.store_dir, entry)):
                continue
            if entry.is_dir():
                client.log_artifacts(self.run_id, str(entry), f"run_dir/{entry.name}")
            elif entry.is_file():
                client.log_artifact(self.run_id, str(entry), "run_dir")

    def fail(self) -> None:
        try:
            _mlflow_client(self.uri).set_terminated(self.run_id, "FAILED")
        except Exception as exc:
            log.warning("MLflow run %s was not marked failed: %s", self.run_id, _first_line(exc))


class MlflowEpochLogger:
    """Logs one epoch's record as metrics at step = epoch (runs in rank 0's process)."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self._failed = False

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        if self._failed:
            return False
        from mlflow.entities import Metric

        step, now = int(record.get("epoch", 0)), _now_ms()
        try:
            metrics = [Metric(key, value, now, step) for key, value in numeric_metrics(record).items()]
            _mlflow_client(self.uri).log_batch(self.run_id, metrics=metrics)
        except Exception as exc:
            self._failed = True  # one warning, then training goes on untracked
            log.warning("MLflow stopped taking metrics at epoch %d (%s); training goes on", step, _first_line(exc))
        return False


# ---------------------------------------------------------------------------- TensorBoard


class TensorBoardTracker(Tracker):
    """Event files in ``tracking_uri`` (a folder) or <run_dir>/tensorboard."""

    def __init__(self, config: FitConfig, run_dir: Path) -> None:
        given = config.output.tracking_uri
        if given is not None and given.startswith("file:"):
            given = urlparse(given).path  # TensorBoard takes a folder; accept the URI form MLflow takes too
        self.log_dir = Path(given or Path(run_dir) / "tensorboard").expanduser()
        try:
            writer = _summary_writer(self.log_dir)
        except OSError as exc:
            raise ConfigError(f"tracking_uri='{self.log_dir}': cannot write TensorBoard files there: "
                              f"{exc.strerror or exc}") from None
        rows = "\n".join(f"| {key} | {value} |" for key, value in flat_params(config).items())
        writer.add_text("config", f"| field | value |\n|---|---|\n{rows}", global_step=0)
        writer.close()
        log.info("tracking to TensorBoard: %s", self.log_dir)

    def epoch_logger(self) -> "TensorBoardEpochLogger":
        return TensorBoardEpochLogger(str(self.log_dir))

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        try:
            writer = _summary_writer(self.log_dir)
            step = int(summary.get("epochs", 0))
            for key, value in numeric_metrics(summary, prefix="final/").items():
                writer.add_scalar(key, value, step)
            writer.add_text("summary", f"```\n{json.dumps(summary, indent=1, default=str)}\n```", global_step=step)
            writer.close()
        except Exception as exc:
            log.warning("TensorBoard summary not written to %s: %s", self.log_dir, _first_line(exc))


class TensorBoardEpochLogger:
    """Writes one epoch's record as scalars at step = epoch, flushed at once (runs in rank 0's process)."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self._writer = None
        self._failed = False

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writer": None}  # a writer holds a thread and a file: not picklable

    def on_epoch_end(self, record: dict[str, Any]) -> bool:
        if self._failed:
            return False
        step = int(record.get("epoch", 0))
        try:
            if self._writer is None:
                self._writer = _summary_writer(Path(self.log_dir))
            for key, value in numeric_metrics(record).items():
                self._writer.add_scalar(key, value, step)
            # Flushed every epoch: the worker process may end without closing the writer.
            self._writer.flush()
        except Exception as exc:
            self._failed = True
            log.warning("TensorBoard stopped taking metrics at epoch %d (%s); training goes on", step,
                        _first_line(exc))
        return False


def _summary_writer(log_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


# ---------------------------------------------------------------------------- helpers


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _same_or_inside(inner: Path, outer: Path) -> bool:
    """True when ``outer`` is ``inner`` or one of its parents (so copying ``outer`` would copy ``inner``)."""
    try:
        inner, outer = inner.resolve(), outer.resolve()
    except OSError:
        return False
    return inner == outer or outer in inner.parents


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
