"""`localsgd:PERIOD`: every worker steps alone; the parameters are all-reduced every PERIOD steps,
so per step a PERIOD-th of one dense all-reduce (amortized)."""

from __future__ import annotations

from paratrain.costmodel.step import Prediction, StepInputs, bound


def predict(inputs: StepInputs) -> Prediction:
    period = int(inputs.option or 1)
    compute = inputs.profile.step_s
    average = inputs.comm("all_reduce", inputs.dense_bytes) if inputs.workers > 1 else 0.0
    comm = average / period
    sent = inputs.dense_bytes / period
    reason = f"{bound(compute, comm, sent, inputs)}; one average of every parameter each {period} steps"
    memory = inputs.replicated(inputs.dense_bytes, "the averaged copy")
    return inputs.prediction(compute, comm, 0.0, sent, memory, reason)
