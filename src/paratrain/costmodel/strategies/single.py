"""`single`: one process with every core; no communication."""

from __future__ import annotations

from paratrain.costmodel.step import Prediction, StepInputs, ms


def predict(inputs: StepInputs) -> Prediction:
    compute = inputs.profile.step_s
    reason = f"one process, {inputs.profile.threads} threads: {ms(compute)} per step of {inputs.batch} rows"
    return inputs.prediction(compute, 0.0, 0.0, 0.0, inputs.replicated(), reason, samples_per_step=inputs.batch)
