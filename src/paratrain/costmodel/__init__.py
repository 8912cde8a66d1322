"""A calibrated cost model: which strategy, on how many workers, over which link, pays off.

``calibrate`` measures this machine for one model (collectives' latency and
bandwidth per link, one worker's compute while p workers run at once, memory);
``predict_step`` turns a calibration into step time, throughput and memory per
rank for a contender ('ddp+topk:0.01') on p workers over a link; ``advise``
ranks the contenders; ``resolve_auto`` picks one for ``fit --strategy auto``.
"""

from paratrain.costmodel.calibration import Calibration, Fingerprint, load_calibration

__all__ = ["Calibration", "Fingerprint", "load_calibration", "predict_step", "Prediction", "resolve_auto"]


def __getattr__(name: str):
    # Lazy: the prediction modules import torch-free code only, but keep `paratrain --help` fast anyway.
    if name in ("predict_step", "Prediction"):
        from paratrain.costmodel import predict

        return getattr(predict, name)
    if name == "resolve_auto":
        from paratrain.costmodel.auto import resolve_auto

        return resolve_auto
    raise AttributeError(name)
