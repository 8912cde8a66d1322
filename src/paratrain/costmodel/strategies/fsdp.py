"""`fsdp`: fully sharded data parallelism (FSDP2's fully_shard): each of p ranks holds 1/p of
the parameters, gradients and optimizer state, and gathers a layer's full parameters to use it.

Memory per worker: (parameters + gradients + optimizer state) / p, the whole batch's
activations (each rank trains on its own rows), and the gathered layer: the largest layer's
full parameters and, during its backward, its full gradient before the reduce-scatter.
Assumed: one FSDP unit per layer; with ``reshard_after_forward=False`` every layer stays
gathered from forward until backward (the whole model's parameters as buffers).

Step (approximate, an upper bound): ddp's compute with the optimizer on 1/p of the
parameters, plus an all-gather of the parameters in forward (and again in backward when
resharded after forward) and a reduce-scatter of the gradients, none of it overlapped
(FSDP prefetches the next layer's gather, which hides some of it). A reduce-scatter of n
bytes costs what a ring all-gather of n/p per rank does: p-1 steps of n/p bytes.
"""

from __future__ import annotations

from paratrain.costmodel.memory import layers, scaled
from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, bound, size


def predict(inputs: StepInputs) -> Prediction:
    p = max(1, inputs.workers)
    profile = inputs.profile
    reshard = bool(inputs.setting("reshard_after_forward", True))
    compute = profile.step_s - profile.optimizer_s * (1 - 1 / p)
    shard = inputs.dense_bytes / p
    gathers = 2 if reshard else 1
    comm = gathers * inputs.comm("all_gather", shard) + inputs.comm("all_gather", shard)  # + the reduce-scatter
    sent = (gathers + 1) * shard * (p - 1)
    largest = FLOAT_BYTES * max(layer.parameters for layer in layers(inputs))
    gathered = 2 * largest if reshard else inputs.dense_bytes + largest
    whole = inputs.replicated()
    memory = scaled(whole, 1 / p, whole.activations_bytes, gathered,
                    f"parameters, gradients and optimizer state / {p}; gathered: "
                    + ("the largest layer and its gradient" if reshard else "every layer (not resharded)"))
    reason = (f"{bound(compute, comm, sent, inputs)}; {gathers} all-gather(s) and a reduce-scatter of "
              f"{size(inputs.dense_bytes)} per step, not overlapped (approximate)")
    return inputs.prediction(compute, comm, 0.0, sent, memory, reason)
