"""`tensor[:T]`: each layer pair's matrices split over T ranks (Megatron style: a column-wise
split layer, then a row-wise split one, an all-reduce after the pair); T is the workers when
not given, and p/T groups train side by side as data-parallel replicas.

Assumed split: an MLP's hidden linear layers in pairs (column-wise, then row-wise); an odd
hidden layer left over and the head stay whole on every rank. Memory per worker: the split
layers' weights / T (and the column-wise layer's bias; the row-wise layer's bias is whole),
with their gradients and optimizer state; activations: the column-wise layer's outputs / T,
everything else whole (the row-wise output is all-reduced to every rank).

Step (approximate): forward + backward / T for the split layers' share of the parameters
(compute taken as proportional to parameters), the rest whole, plus two all-reduces per pair
among T ranks (the row-wise output in forward, the column-wise input's gradient in backward:
rows x width x 4 bytes each), plus ddp's gradient all-reduce among the p/T replicas.
"""

from __future__ import annotations

from paratrain.costmodel.memory import LayerShape, layers, scaled
from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, bound, ms
from paratrain.costmodel.strategies.pipeline import degrees
from paratrain.errors import ConfigError


def pairs(shapes: list[LayerShape]) -> list[tuple[LayerShape, LayerShape]]:
    """(column-wise, row-wise) pairs of the hidden layers (the head, the last shape, stays whole)."""
    hidden = shapes[:-1]
    return [(hidden[i], hidden[i + 1]) for i in range(0, len(hidden) - 1, 2)]


def predict(inputs: StepInputs) -> Prediction:
    text = inputs.option or str(inputs.workers)
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{inputs.contender!r}: the tensor-parallel degree after ':' must be an integer >= 1")
    degree = int(text)
    data = degrees(inputs, degree, "tensor-parallel degree")
    shapes = layers(inputs)
    split = pairs(shapes)
    total = sum(shape.parameters for shape in shapes) or 1
    cut = sum(col.parameters + row.weight for col, row in split)
    kept = (total - cut) + cut / degree
    rows = inputs.batch
    activations = sum(shape.activations_per_row for shape in shapes)
    activations -= sum(col.activations_per_row for col, _ in split) * (1 - 1 / degree)
    whole = inputs.replicated()
    memory = scaled(whole, kept / total, activations * rows, 0.0,
                    f"{len(split)} layer pair(s) split over {degree}: {kept / total:.0%} of the parameters per rank")
    profile = inputs.profile
    share = kept / total
    compute = profile.forward_backward_s * share + profile.optimizer_s * share
    messages = [FLOAT_BYTES * rows * size for col, row in split for size in (row.rows, col.cols)]
    within = sum(inputs.comm("all_reduce", nbytes, workers=degree) for nbytes in messages) if degree > 1 else 0.0
    gradients = FLOAT_BYTES * kept
    replicas = inputs.comm("all_reduce", gradients, workers=data) if data > 1 else 0.0
    comm = within + replicas
    sent = sum(messages) + (gradients if data > 1 else 0.0)
    reason = (f"{bound(compute, comm, sent, inputs)}; {2 * len(split)} activation all-reduces per step among "
              f"{degree} ({ms(within)})")
    if not split:
        reason += "; no layer pair to split (the model has fewer than 2 hidden layers): every rank holds it all"
    if data > 1:
        reason += f"; {data} replicas all-reduce their gradients ({ms(replicas)})"
    return inputs.prediction(compute, comm, 0.0, sent, memory, reason, samples_per_step=inputs.batch * data)
