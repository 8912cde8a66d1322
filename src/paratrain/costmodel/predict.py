"""``predict_step``: a contender's step time, throughput and memory per rank for p workers on a link."""

from __future__ import annotations

from dataclasses import replace

from paratrain.costmodel.calibration import Calibration
from paratrain.costmodel.compute import compute_profile
from paratrain.costmodel.network import Network, as_network
from paratrain.costmodel.step import Prediction, StepInputs, ms
from paratrain.costmodel.strategies import model_for
from paratrain.errors import ConfigError
from paratrain.launch.links import LOOPBACK

__all__ = ["Prediction", "predict_step"]


def predict_step(calibration: Calibration, contender: str, workers: int, link) -> Prediction:
    """Predict one step of ``contender`` ('ddp+topk:0.01', 'localsgd:8', 'single') on ``workers``
    workers over ``link``: a launch.links.Link or its name (workers on this machine), a
    costmodel.network.Network, or a rate in bits per second (one worker per machine).

    Example:
        >>> from dataclasses import replace

from paratrain.costmodel.calibration import Calibration, ComputeProfile, Fingerprint
        >>> calibration = Calibration(Fingerprint((10, 1024, 1024, 1), 1_061_889, 256), cores=2,
        ...     compute={1: ComputeProfile(1, 2, 0.02, 0.018, 0.002, 5e-5)})
        >>> round(predict_step(calibration, "ddp", 8, 10e9).comm_bytes / 2**20, 1)
        4.1
    """
    from paratrain.strategies import split_contender, split_strategy_name, strategy_class

    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers={workers!r} must be an integer >= 1")
    strategy, compress = split_contender(contender)
    name, argument = split_strategy_name(strategy)
    cls = strategy_class(strategy)
    network = as_network(link)
    if not cls.runs_across_hosts and not network.shared_machine:
        raise ConfigError(f"{contender!r} runs on one machine only; it cannot use workers on {network.describe()}")
    module = model_for(name)
    if module is None:
        from paratrain.costmodel.strategies import MODULES

        raise ConfigError(f"{contender!r} has no cost model; modelled: {', '.join(MODULES)}")
    if not cls.needs_process_group:
        workers = 1
    if 1 not in calibration.compute:
        raise ConfigError("the calibration has no one-process compute measurement; run `paratrain calibrate` again")
    profile, note = compute_profile(calibration, network, workers)
    inputs = StepInputs(calibration, network, workers, profile, note, compress or argument, contender)
    prediction = module.predict(inputs)
    measured = profile.strategy_step_s.get(contender)
    if measured is None or not network.shared_machine:
        return prediction
    # The contender's real step was timed on loopback: what the structure above does not explain
    # there (RPC, cache lines, Python in hooks) is added on every link of this machine.
    loopback = module.predict(replace(inputs, network=Network(LOOPBACK))).step_s
    return with_residual(prediction, measured - loopback)


def with_residual(prediction: Prediction, residual_s: float) -> Prediction:
    """The prediction plus the calibrated residual (never below half its compute)."""
    step = max(prediction.step_s + residual_s, prediction.compute_s / 2)
    added = step - prediction.step_s
    rate = prediction.samples_per_s * prediction.step_s / step
    sign = "+" if added >= 0 else "-"
    reason = f"{prediction.reason}; {sign}{ms(abs(added))} measured beyond the model on loopback"
    return replace(prediction, step_s=step, samples_per_s=rate, extra_s=prediction.extra_s + added, reason=reason)


