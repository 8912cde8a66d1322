"""`hogwild`: workers of one machine update parameters in shared memory without locks: no
communication, compute only (contention for cores and memory bandwidth is in the calibration)."""

from __future__ import annotations

from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, ms


def predict(inputs: StepInputs) -> Prediction:
    compute = inputs.profile.step_s
    # The parameters live once per machine; each worker keeps its own gradients and optimizer state.
    memory = inputs.base_memory() - FLOAT_BYTES * inputs.parameters * (1 - 1 / max(1, inputs.workers))
    reason = (f"no communication: {inputs.workers} workers share one copy of the parameters; "
              f"{ms(compute)} of compute per step ({inputs.profile_note})")
    return inputs.prediction(compute, 0.0, 0.0, 0.0, memory, reason)
