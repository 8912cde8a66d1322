"""`async`: every trainer pushes its gradients to a parameter server on rank 0 and gets the
parameters back (4n bytes each way); the server applies each push as one optimizer step.

A trainer's cycle: forward + backward, the round trip, the server's step for it. The server
is shared: it receives (p-1) pushes of 4n bytes through one link and runs p optimizer steps per
round (fan-in), so with many workers the server, not the trainers, sets the pace."""

from __future__ import annotations

from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, ms, size


def predict(inputs: StepInputs) -> Prediction:
    profile = inputs.profile
    p = inputs.workers
    n = inputs.dense_bytes
    compute = profile.forward_backward_s
    server_step = profile.optimizer_s
    round_trip = 2 * inputs.comm("p2p", n, workers=2) if p > 1 else 0.0
    # Copies in and out of the flat vector (gradients out, parameters back) on the trainer.
    trainer = compute + server_step + round_trip
    fan_in = (p - 1) * inputs.comm("p2p", n, workers=2) + p * server_step if p > 1 else 0.0
    step = max(trainer, fan_in)
    comm = step - compute - server_step
    server_bytes = FLOAT_BYTES * inputs.parameters * 3  # parameters and the optimizer's two moments
    memory = inputs.replicated(server_bytes, "rank 0 also holds the server's parameters and Adam moments")
    who = "the server's fan-in" if fan_in > trainer else "each trainer's round trip"
    reason = (f"{who} sets the pace: {size(2 * n)} per push and reply is {ms(round_trip)}, "
              f"server {ms(fan_in)} per round of {p} pushes, against {ms(compute)} of compute")
    return inputs.prediction(compute, comm, server_step, 2 * n if p > 1 else 0.0, memory, reason)
