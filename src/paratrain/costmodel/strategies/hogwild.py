"""`hogwild`: workers of one machine update parameters in shared memory without locks: no
communication, compute only (contention for cores and memory bandwidth is in the calibration)."""

from __future__ import annotations

from dataclasses import replace

from paratrain.costmodel.step import Prediction, StepInputs, ms


def predict(inputs: StepInputs) -> Prediction:
    compute = inputs.profile.step_s
    # The parameters live once per machine; each worker keeps its own gradients and optimizer state.
    whole = inputs.replicated(note="one shared copy of the parameters, counted 1/p per worker")
    memory = replace(whole, parameters_bytes=whole.parameters_bytes / max(1, inputs.workers))
    reason = (f"no communication: {inputs.workers} workers share one copy of the parameters; "
              f"{ms(compute)} of compute per step ({inputs.profile_note})")
    return inputs.prediction(compute, 0.0, 0.0, 0.0, memory, reason)
