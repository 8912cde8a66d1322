"""A calibration built by hand: known alpha, beta and compute, so that predictions have closed forms."""

from __future__ import annotations

from paratrain.costmodel.calibration import Calibration, CollectiveFit, ComputeProfile, Fingerprint

LAYERS = (10, 1024, 1024, 1)
PARAMETERS = 10 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 + 1


def synthetic(alpha: float = 1e-4, beta: float = 1e-9, step: float = 0.02, cores: int = 2,
              layers: tuple[int, ...] = LAYERS, parameters: int = PARAMETERS, batch: int = 256) -> Calibration:
    fits = {name: CollectiveFit(alpha, beta) for name in ("all_reduce", "all_gather", "broadcast", "p2p")}
    profile = ComputeProfile(workers=1, threads=cores, step_s=step, forward_backward_s=step * 0.9,
                             optimizer_s=step * 0.1, per_sample_s=step / batch, ddp_overhead_s=0.0,
                             topk_encode_s=0.001, topk_decode_fixed_s=0.0005, topk_decode_per_rank_s=1e-5,
                             powersgd_compute_s=0.002)
    two = ComputeProfile(**{**profile.to_dict(), "workers": 2, "threads": 1, "step_s": step * 1.8,
                            "forward_backward_s": step * 1.6, "optimizer_s": step * 0.2})
    return Calibration(Fingerprint(layers, parameters, batch), cores=cores, collectives={"loopback": fits},
                       compute={1: profile, 2: two},
                       memory={"parameters": 4.0 * parameters, "gradients": 4.0 * parameters,
                               "optimizer_state": 8.0 * parameters, "activations": 1e6, "process_rss": 3e8})
