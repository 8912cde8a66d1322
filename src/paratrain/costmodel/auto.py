"""``fit --strategy auto``: the advisor's choice for the run's workers and link, in one function."""

from __future__ import annotations

import logging
from typing import Any

from paratrain.config import FitConfig

log = logging.getLogger("paratrain")


def resolve_auto(config: FitConfig, frame: Any = None) -> tuple[FitConfig, str | None, str | None]:
    """(config with strategy and compress chosen, choice, reason); unchanged and (None, None) unless
    strategy is 'auto'. Uses ``parallel.calibration`` when given (refused if from another model), else
    a quick cached probe of this process. When one process is predicted fastest, workers becomes 1."""
    if config.parallel.strategy != "auto":
        return config, None, None
    from paratrain.costmodel.advise import advise
    from paratrain.costmodel.calibrate import workload_from_config
    from paratrain.costmodel.calibration import load_calibration
    from paratrain.costmodel.network import as_network
    from paratrain.costmodel.probe import probe_calibration
    from paratrain.data.prepare import load_frame
    from paratrain.strategies import default_contenders, split_contender

    frame = frame if frame is not None else load_frame(config.data.path)
    workload = workload_from_config(config.updated({"strategy": "single", "workers": 1}), frame)
    if config.parallel.calibration:
        calibration = load_calibration(config.parallel.calibration)
        calibration.check_model(workload.fingerprint(), config.parallel.calibration)
    else:
        calibration = probe_calibration(workload)
    rows = len(frame) * (1 - config.data.val_fraction)
    workers = config.parallel.workers
    # Among the data-parallel contenders, as measured for auto: a model-splitting strategy changes what a
    # batch is (one replica per pipeline or tensor group) and depends on the model's shape; advise ranks it.
    advice = advise(calibration, as_network(config.parallel.link), workers, config.train.epochs * rows,
                    contenders=default_contenders(), options=config.parallel.options)
    best = advice.best
    choice = best.prediction.contender
    strategy, compress = split_contender(choice)
    chosen_workers = best.prediction.workers
    on = "1 worker" if chosen_workers == 1 else f"{chosen_workers} workers"
    reason = f"{choice} predicted fastest to target on {on}: {best.reason}"
    if chosen_workers != workers:
        reason += f" ({advice.verdict})"
    log.info("strategy auto: %s", reason)
    resolved = config.updated({"strategy": strategy, "compress": compress, "workers": chosen_workers})
    return resolved, choice, reason
