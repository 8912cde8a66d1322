"""`sparse:RATIO`: each step every worker all-gathers the k largest entries of its unshared update
((p-1)·8k bytes arrive per rank, growing with p); the exchange runs while the next step computes,
so only what outlasts the compute is exposed. Selection and the p-way merge are measured (top-k)."""

from __future__ import annotations

import math

from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, bound, ms


def predict(inputs: StepInputs) -> Prediction:
    ratio = float(inputs.option or 0.01)
    profile = inputs.profile
    compute = profile.step_s
    k = math.ceil(ratio * inputs.parameters)
    payload = 8.0 * k
    gather = inputs.comm("all_gather", payload) if inputs.workers > 1 else 0.0
    exposed = max(0.0, gather - compute)
    # Selection as top-k's; merging p workers' pairs twice (into the shared copy and the model).
    arithmetic = (profile.topk_encode_s or 0.0) + 2 * inputs.workers * (profile.topk_decode_per_rank_s or 0.0)
    memory = inputs.replicated(3 * FLOAT_BYTES * inputs.parameters + payload * inputs.workers,
                               "shared copy, update and residual; every rank's pairs")
    reason = (f"{bound(compute, gather, payload, inputs)}, overlapped with the next step ({ms(exposed)} exposed); "
              f"selection and merge {ms(arithmetic)}")
    return inputs.prediction(compute, exposed, arithmetic, payload, memory, reason)
