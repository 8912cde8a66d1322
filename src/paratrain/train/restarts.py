"""Relaunch the local workers after one dies (``parallel.max_restarts``), from the last checkpoint.

A worker that dies (killed, out of memory, a lost peer) is a fault that a relaunch can get
past; a divergence or a wrong input is not, and neither is Ctrl-C or SIGTERM (``Interrupted``,
which is never caught here). Each relaunch resumes the run directory's checkpoint.pt (at an
epoch's end or, with ``checkpoint_every_steps``, inside an epoch), or starts over in the same
directory when there is none yet. The caller keeps holding the run directory's lock throughout.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from paratrain.errors import WorkerError
from paratrain.train import rundir
from paratrain.train.checkpoint import load_torch
from paratrain.train.metrics import MetricsLog

log = logging.getLogger("paratrain")

NOT_RESTARTED = frozenset({"DivergenceError", "ConfigError", "DataError", "FormulaError"})
"""Errors a worker reports that would only happen again: the run stops at the first."""


def restartable(error: WorkerError) -> bool:
    """Whether a relaunch may get past ``error``: a dead or failed worker, not a user error."""
    return getattr(error, "reported_type", None) not in NOT_RESTARTED


def launch_with_restarts(job: Any, max_restarts: int, launch: Callable[[Any], dict]) -> tuple[dict, int]:
    """Run ``launch(job)``; after a restartable WorkerError run it again from the last checkpoint,
    up to ``max_restarts`` times. Returns rank 0's result and the number of restarts."""
    restarts = 0
    while True:
        try:
            return launch(job), restarts
        except WorkerError as error:
            if restarts >= max_restarts or not restartable(error):
                raise
            restarts += 1
            job = prepare_restart(job)
            log.warning("%s; restart %d of %d: %s", error, restarts, max_restarts, _resumes_from(job))


def prepare_restart(job: Any) -> Any:
    """The job that continues the run in ``job.run_dir``: a resume of its checkpoint.pt, or a fresh
    start (metrics emptied) where the run has none yet. Call only while no worker runs."""
    run_dir = Path(job.run_dir)
    rundir.remove_temp_files(run_dir)  # of writes the dead worker, or the stopped ones, never finished
    resume = (run_dir / rundir.CHECKPOINT_FILE).is_file()
    if not resume:
        MetricsLog(run_dir / rundir.METRICS_FILE).truncate_after(0)
    return dataclasses.replace(job, resume=resume)


def _resumes_from(job: Any) -> str:
    if not job.resume:
        return f"starting over in {job.run_dir} (no checkpoint yet)"
    state = load_torch(Path(job.run_dir) / rundir.CHECKPOINT_FILE)["state"]
    epoch, inside = int(state["epoch"]), int(state.get("epoch_step", 0))
    where = (f"in epoch {epoch + 1} after its step {inside}" if inside else f"after epoch {epoch}")
    return f"resuming from the checkpoint {where} (step {state['step']} of the run) in {job.run_dir}"
