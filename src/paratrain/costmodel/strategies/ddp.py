"""`ddp`, plain and with compression: synchronous all-reduce of gradients every step.

Plain: gradients go in buckets (torch's defaults: the first 1 MiB, then 25 MiB),
all-reduced in a ring, 2(p-1)·alpha + 2(p-1)/p·n·beta each; every bucket but the
last overlaps the rest of the backward pass. DDP's own cost (copies into
buckets, hooks, gloo's threads contending for the cores) is what calibration
measured beyond compute and the all-reduce.

powersgd:RANK: one bucket (required on gloo); per matrix M (rows x cols) it
all-reduces P (rows x RANK), orthogonalizes, then all-reduces Q (cols x RANK):
two all-reduces in sequence that cannot overlap, plus one for the vectors it
leaves dense. Small messages: latency-bound; its arithmetic is measured.

topk:RATIO: per bucket, k = ceil(RATIO·n) (int32 index, float32 value) pairs
all-gathered: (p-1)·8k bytes arrive at each rank, growing with p; selection,
error feedback and the p-way decode are measured.
"""

from __future__ import annotations

import math

from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, bound, ms, size

FIRST_BUCKET_BYTES = 1 * 2**20
BUCKET_BYTES = 25 * 2**20
BACKWARD_SHARE = 2 / 3
"""Of forward + backward, the backward's share (about twice the forward's arithmetic)."""


def buckets(total: float) -> list[float]:
    """DDP's bucket sizes for ``total`` bytes of gradients (last bucket = the first gradients computed last)."""
    sizes, left = [], total
    cap = FIRST_BUCKET_BYTES
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
        cap = BUCKET_BYTES
    return sizes


def matrices(inputs: StepInputs) -> tuple[list[tuple[int, int]], int]:
    """(rows, cols) of the weight matrices and the count of other (vector) parameters."""
    layers = inputs.calibration.fingerprint.layers
    if inputs.calibration.fingerprint.model != "mlp":
        return [], inputs.parameters
    shapes = [(layers[i + 1], layers[i]) for i in range(len(layers) - 1)]
    vectors = inputs.parameters - sum(r * c for r, c in shapes)
    return shapes, max(0, vectors)


def predict(inputs: StepInputs) -> Prediction:
    profile = inputs.profile
    compute = profile.step_s
    overhead = profile.ddp_overhead_s or 0.0
    if inputs.workers <= 1:
        overhead = 0.0
    from paratrain.strategies.compression import parse_compression

    spec = parse_compression(inputs.option)  # the one parser of compression names (None: dense)
    name = spec.name if spec is not None else ""
    if name == "powersgd":
        return _powersgd(inputs, compute, overhead, int(spec.value))
    if name == "topk":
        return _topk(inputs, compute, overhead, float(spec.value))
    scale = {"fp16": 0.5, "bf16": 0.5, "int8": 0.25}.get(name, 1.0)
    return _dense(inputs, compute, overhead, scale, name or "dense")


def _dense(inputs: StepInputs, compute: float, overhead: float, scale: float, label: str) -> Prediction:
    profile = inputs.profile
    sent = inputs.dense_bytes * scale
    pieces = buckets(sent)
    times = [inputs.comm("all_reduce", piece) for piece in pieces]
    window = profile.forward_backward_s * BACKWARD_SHARE * (1 - pieces[-1] / sent) if sent else 0.0
    exposed = times[-1] + max(0.0, sum(times[:-1]) - window)
    memory = inputs.replicated(sent, "DDP's buckets: a copy of the gradients")
    reason = bound(compute, exposed, sent, inputs)
    if len(pieces) > 1:
        reason += f"; {len(pieces) - 1} of {len(pieces)} buckets overlap the backward pass"
    return inputs.prediction(compute, exposed, overhead, sent, memory, reason)


def _powersgd(inputs: StepInputs, compute: float, overhead: float, rank: int) -> Prediction:
    shapes, vectors = matrices(inputs)
    p_numel = q_numel = 0
    dense_numel = vectors
    for rows, cols in shapes:
        r = min(rows, cols, rank)
        if (rows + cols) * r * 2 < rows * cols:
            p_numel += rows * r
            q_numel += cols * r
        else:
            dense_numel += rows * cols
    # Three all-reduces in sequence: the dense leftovers, P, then Q (it needs the orthogonalized P).
    comm = sum(inputs.comm("all_reduce", FLOAT_BYTES * n) for n in (dense_numel, p_numel, q_numel) if n)
    arithmetic = inputs.profile.powersgd_compute_s or 0.0
    sent = FLOAT_BYTES * (p_numel + q_numel + dense_numel)
    ratio = inputs.dense_bytes / sent if sent else math.inf
    memory = inputs.replicated(inputs.dense_bytes * 2, "one bucket and the error-feedback copy")
    latency = sum(inputs.comm("all_reduce", 1.0) for n in (dense_numel, p_numel, q_numel) if n)
    shape = "latency-bound" if latency > comm / 2 else "bandwidth-bound"
    reason = (f"{bound(compute, comm, sent, inputs)}; sends {ratio:.0f}x less than dense in 3 sequential "
              f"all-reduces ({shape}); {ms(arithmetic)} of its own arithmetic")
    return inputs.prediction(compute, comm, overhead + arithmetic, sent, memory, reason)


def _topk(inputs: StepInputs, compute: float, overhead: float, ratio: float) -> Prediction:
    profile = inputs.profile
    pieces = buckets(inputs.dense_bytes)
    k_total = sum(math.ceil(ratio * piece / FLOAT_BYTES) for piece in pieces)
    payload = 8.0 * k_total
    comm = sum(inputs.comm("all_gather", 8.0 * math.ceil(ratio * piece / FLOAT_BYTES)) for piece in pieces)
    # Calibrated at ratio 0.01: selection scales little with the ratio (one pass over |g| dominates).
    arithmetic = ((profile.topk_encode_s or 0.0) + (profile.topk_decode_fixed_s or 0.0)
                  + inputs.workers * (profile.topk_decode_per_rank_s or 0.0))
    received = payload * (inputs.workers - 1)
    memory = inputs.replicated(3 * inputs.dense_bytes + payload * inputs.workers,
                               "bucket, residual and decoded copies; every rank's pairs")
    reason = (f"{bound(compute, comm, payload, inputs)}; all-gather brings {size(received)} per step to each "
              f"rank ({inputs.workers - 1} peers); selection and decode {ms(arithmetic)}")
    return inputs.prediction(compute, comm, overhead + arithmetic, payload, memory, reason)
