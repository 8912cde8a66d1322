"""`zero1`: ddp with the optimizer state sharded (torch's ZeroRedundancyOptimizer): gradients
are all-reduced in DDP's buckets as in ddp; each rank steps the optimizer on its 1/p of the
parameters and the updated shards are sent to every rank.

Memory per worker: full parameters and gradients, optimizer state / p, DDP's buckets.
Step (approximate): ddp's prediction, with the optimizer's arithmetic on 1/p of the
parameters, plus the shards' exchange after the step (modelled as one all-gather of n/p
bytes per rank; ZeroRedundancyOptimizer broadcasts each shard from its owner, in sequence
after the step, so none of it overlaps).
"""

from __future__ import annotations

from dataclasses import replace

from paratrain.costmodel.step import Prediction, StepInputs, bound, ms
from paratrain.costmodel.strategies import ddp


def predict(inputs: StepInputs) -> Prediction:
    p = max(1, inputs.workers)
    dense = ddp.predict(replace(inputs, option=None))
    saved = inputs.profile.optimizer_s * (1 - 1 / p)
    compute = dense.compute_s - saved
    exchange = inputs.comm("all_gather", inputs.dense_bytes / p)
    comm = dense.comm_s + exchange
    sent = dense.comm_bytes + inputs.dense_bytes / p * (p - 1)
    whole = dense.memory
    memory = replace(whole, optimizer_bytes=whole.optimizer_bytes / p,
                     note=f"optimizer state / {p}; DDP's buckets: a copy of the gradients")
    reason = (f"{bound(compute, comm, sent, inputs)}; the updated shards' exchange is {ms(exchange)} "
              f"after the step, the optimizer steps 1/{p} of the parameters")
    return inputs.prediction(compute, comm, dense.extra_s, sent, memory, reason)
