"""`pipeline:S`: the model's layers split into S stages on S ranks (p/S pipelines side by side);
each step's rows go through in M micro-batches (``microbatches``, default 4) under a schedule
(``pipeline_schedule``: 1f1b, default, or gpipe).

Memory per worker, the largest stage's: its layers' parameters, gradients and optimizer state
(stages balanced by parameter count, contiguous layers), and its layers' activations for the
micro-batches alive at once: gpipe keeps all M until the backward passes begin; 1f1b keeps at
most S - s on stage s (min(S, M) on the first).

Step (approximate): the largest stage's share of forward + backward over M + S - 1 slots of
a micro-batch each (the bubble), plus its share of the optimizer; each slot also sends the
stage's output activations forward or their gradient back (one p2p message of
rows/M x width x 4 bytes, on the critical path); with p > S the pipelines' stages all-reduce
their gradients as ddp does. Compute is taken as proportional to parameters (true of an
MLP's matrix products, not of its element-wise layers).
"""

from __future__ import annotations

from paratrain.costmodel.memory import LayerShape, MemoryEstimate, layers, scaled
from paratrain.costmodel.step import FLOAT_BYTES, Prediction, StepInputs, bound, ms
from paratrain.errors import ConfigError


def split_stages(shapes: list[LayerShape], count: int) -> list[list[LayerShape]]:
    """Contiguous stages whose largest parameter count is as small as it can be: the strategy's own
    split (``--balance params``), so the prediction describes the stages a run builds."""
    from paratrain.strategies.pipeline_split import balanced_split

    starts = balanced_split([shape.parameters for shape in shapes], count)
    ends = [*starts[1:], len(shapes)]
    return [shapes[start:end] for start, end in zip(starts, ends)]


def degrees(inputs: StepInputs, stages: int, what: str) -> int:
    """The data-parallel degree p / ``stages``; ConfigError when p is not a multiple."""
    if stages < 1 or inputs.workers % stages:
        raise ConfigError(f"{inputs.contender!r} needs workers divisible by {stages} ({what}), got {inputs.workers}")
    return inputs.workers // stages


def stage_memory(inputs: StepInputs, stages: list[list[LayerShape]], micro: int, schedule: str) -> MemoryEstimate:
    """The stage whose memory is largest."""
    whole = inputs.replicated()
    total = sum(shape.parameters for shape in layers(inputs)) or 1
    rows = inputs.batch / micro
    estimates = []
    for index, stage in enumerate(stages):
        alive = micro if schedule == "gpipe" else min(len(stages) - index, micro)
        activations = sum(shape.activations_per_row for shape in stage) * rows * alive
        share = sum(shape.parameters for shape in stage) / total
        note = (f"stage {index + 1} of {len(stages)}: {len(stage)} layer(s), {share:.0%} of the parameters, "
                f"activations of {alive} micro-batch(es) of {rows:g} rows ({schedule})")
        estimates.append(scaled(whole, share, activations, 0.0, note))
    return max(estimates, key=lambda estimate: estimate.total_bytes)


def stage_count(inputs: StepInputs) -> int:
    """S of 'pipeline:S' (2 when not given)."""
    text = inputs.option or "2"
    if not text.isdigit() or int(text) < 2:
        raise ConfigError(f"{inputs.contender!r}: the stage count after ':' must be an integer >= 2, got {text!r}")
    return int(text)


def predict(inputs: StepInputs) -> Prediction:
    count = stage_count(inputs)
    data = degrees(inputs, count, "stages")
    micro = int(inputs.setting("microbatches", 4))
    schedule = str(inputs.setting("pipeline_schedule", "1f1b"))
    shapes = layers(inputs)
    if len(shapes) < count:
        raise ConfigError(f"{inputs.contender!r} needs at least {count} layers to split; the model has {len(shapes)}")
    stages = split_stages(shapes, count)
    total = sum(shape.parameters for shape in shapes) or 1
    share = max(sum(shape.parameters for shape in stage) for stage in stages) / total
    profile = inputs.profile
    slots = (micro + count - 1) / micro
    compute = profile.forward_backward_s * share * slots + profile.optimizer_s * share
    rows = inputs.batch / micro
    boundary = FLOAT_BYTES * rows * max(stage[-1].rows for stage in stages[:-1])
    sends = 2 * (micro + count - 1) * inputs.comm("p2p", boundary, workers=2)
    stage_bytes = FLOAT_BYTES * share * total
    replicas = inputs.comm("all_reduce", stage_bytes, workers=data) if data > 1 else 0.0
    comm = sends + replicas
    sent = 2 * micro * boundary + (stage_bytes if data > 1 else 0.0)
    memory = stage_memory(inputs, stages, micro, schedule)
    reason = (f"{bound(compute, comm, sent, inputs)}; {count} stages ({share:.0%} of the parameters on the "
              f"largest), {micro} micro-batches ({schedule}): bubble x{slots:.2f}, activation sends {ms(sends)}")
    if data > 1:
        reason += f"; {data} pipelines all-reduce their gradients ({ms(replicas)})"
    return inputs.prediction(compute, comm, 0.0, sent, memory, reason, samples_per_step=inputs.batch * data)
