"""fsdp and zero1: the same training as ddp, in less memory per rank, with sharded checkpoints.

Runs share one module fixture (each 2-worker run costs seconds of process start-up):
ddp and zero1 train 2 epochs uninterrupted; fsdp trains 1 epoch, stops, and resumes for
the second from its sharded checkpoint. Shuffle off, fp32, Adam, 2 micro-batches of 16 rows
per step (fsdp skips the reduce-scatter of the first, as ddp its all-reduce).

Tolerances: parameters agree with ddp's to atol 1e-5 (measured: equal bit for bit; the
sharded update differs only in the order of float32 sums, should a torch version change
it), validation loss to rel 1e-5. A continuation on one process with twice the batch sees
the same rows per step as two workers (interleaved shards, see test_ddp_equivalence.py):
atol 2e-5, the tolerance of that equivalence.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import shutil

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paratrain.config import FitConfig
from paratrain.train.fit import fit, resume
from tests.conftest import assert_states_close, model_state

TOLERANCE = 1e-5
ONE_PROCESS_TOLERANCE = 2e-5
# Three hidden layers of 128: the two 128x128 weights dominate, so that ZeRO, which gives each rank
# whole tensors, can split the state about evenly (with one 128x128 weight one rank would hold 92%).
HIDDEN = [128, 128, 128]


def _config(root, data, name, **fields):
    base = {"path": str(data), "target": "y", "hidden": HIDDEN, "epochs": 2, "shuffle": False, "precision": "fp32",
            "seed": 3, "optimizer": "adam", "lr": 0.003, "schedule": "cosine", "batch_size": 16, "accumulate": 2,
            "workers": 2,
            "verbosity": 0, "out": str(root / name)}
    return FitConfig.from_dict({**base, **fields})


@pytest.fixture(scope="module")
def runs(tmp_path_factory, table):
    root = tmp_path_factory.mktemp("fsdp-zero1")
    out = {"root": root, "table": table}
    for strategy in ("ddp", "zero1"):
        out[strategy] = fit(_config(root, table, strategy, strategy=strategy))
    stopped = fit(_config(root, table, "fsdp", strategy="fsdp", stop_after=1))
    assert stopped.summary["status"] == "stopped"
    assert (stopped.run_dir / "checkpoint-e00001.dcp").is_dir()  # sharded: every rank wrote its part
    # A copy of the stopped run, for continuing on one process below.
    shutil.copytree(stopped.run_dir, root / "fsdp-stopped")
    out["fsdp"] = resume(stopped.run_dir)
    return out


@pytest.mark.timeout(240)
def test_fsdp_resumed_and_zero1_reach_ddp_parameters(runs):
    reference = model_state(runs["ddp"].run_dir)
    for strategy in ("zero1", "fsdp"):
        assert runs[strategy].summary["epochs"] == 2
        assert_states_close(reference, model_state(runs[strategy].run_dir), atol=TOLERANCE)
        assert runs[strategy].summary["val_loss"] == pytest.approx(runs["ddp"].summary["val_loss"], rel=1e-5)
    lines = (runs["fsdp"].run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    # The resumed run's sharded checkpoint replaced the first one.
    assert sorted(p.name for p in runs["fsdp"].run_dir.glob("checkpoint-e*.dcp")) == ["checkpoint-e00002.dcp"]


@pytest.mark.timeout(240)
def test_sharding_cuts_the_memory_per_rank(runs):
    ddp, fsdp, zero1 = (runs[s].summary["memory"] for s in ("ddp", "fsdp", "zero1"))
    ddp_state = max(rank["model_state_bytes"] for rank in ddp)
    ddp_optimizer = max(rank["optimizer_bytes"] for rank in ddp)
    # Adam: parameters + gradients + two moments, each split in 2 (measured ~0.50; rows of the
    # one-output head and Adam's step counters are not split evenly).
    assert max(rank["model_state_bytes"] for rank in fsdp) <= 0.55 * ddp_state
    assert max(rank["optimizer_bytes"] for rank in zero1) <= 0.55 * ddp_optimizer
    # zero1 keeps whole parameters and gradients, as ddp.
    assert min(rank["parameters_bytes"] for rank in zero1) == max(rank["parameters_bytes"] for rank in ddp)


@pytest.mark.timeout(240)
def test_sharded_checkpoint_continues_in_one_process_and_predicts(runs, tmp_path):
    # Two workers of 2 x 16 rows = one process of batch 64 (same rows per step): the sharded model and
    # Adam's sharded moments must load into the plain module and optimizer, without a process group.
    single = resume(runs["root"] / "fsdp-stopped", {"strategy": "single", "workers": 1, "batch_size": 64,
                                                     "accumulate": 1})
    assert single.summary["epochs"] == 2
    assert_states_close(model_state(runs["fsdp"].run_dir), model_state(single.run_dir), atol=ONE_PROCESS_TOLERANCE)

    from paratrain.cli import main

    out = tmp_path / "predictions.csv"
    assert main(["predict", "--run", str(runs["fsdp"].run_dir), "--data", str(runs["table"]), "--out", str(out)]) == 0
    predictions = [float(v) for v in out.read_text().splitlines()[1:]]
    assert len(predictions) == 512 and all(math.isfinite(v) for v in predictions)


@pytest.mark.timeout(120)
def test_fsdp_trains_in_bf16_on_one_rank_group(tmp_path, table):
    result = fit(_config(tmp_path, table, "bf16", strategy="fsdp", workers=1, epochs=1, precision="bf16",
                         hidden=[16, 16], batch_size=32, accumulate=1))
    assert result.summary["precision"] == "bf16"
    # The loop told the strategy (WorkerContext.precision): per step it gathers 2-byte weights twice
    # (forward, backward) and reduces 4-byte gradients, 8 bytes per parameter (fp32: 12).
    parameters = (5 * 16 + 16) + (16 * 16 + 16) + (16 + 1)
    assert result.summary["comm_bytes_per_step"] == 8 * parameters
    assert math.isfinite(result.summary["train_loss"]) and math.isfinite(result.summary["val_loss"])


def _two_rank_checks(rank: int, store_path: str, out_dir: str) -> None:
    """On 2 ranks: validation with a different number of batches per rank, and bf16 weights."""
    from paratrain.models.mlp import MLP
    from paratrain.strategies import WorkerContext, create_strategy
    from paratrain.train.metrics import evaluation_sums

    store = dist.FileStore(store_path, 2)
    # A hang would fail here after 30 s instead of stalling the suite.
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        torch.manual_seed(0)
        model = MLP(5, (16, 16), 1)
        plain = copy.deepcopy(model)
        strategy = create_strategy("fsdp")
        wrapped = strategy.wrap_model(model, WorkerContext(rank=rank, world_size=2))
        x = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
        y = torch.randn(5, generator=torch.Generator().manual_seed(2))
        # Batches of 1 row: rank 0 makes 3 forward calls, rank 1 makes 2.
        sums = evaluation_sums(wrapped, strategy.eval_forward(wrapped), x[rank::2], y[rank::2], "regression", 1,
                               contextlib.nullcontext)
        dist.all_reduce(sums)
        expected = evaluation_sums(plain, plain, x, y, "regression", 5, contextlib.nullcontext)
        result = {"eval_matches": bool(torch.allclose(sums, expected, rtol=1e-6, atol=1e-9))}

        torch.manual_seed(0)
        model = MLP(5, (16, 16), 1)
        bf16 = create_strategy("fsdp").wrap_model(model, WorkerContext(rank=rank, world_size=2, precision="bf16"))
        seen: list[str] = []
        bf16.layers[0].register_forward_pre_hook(lambda module, args: seen.append(str(module.weight.dtype)))
        optimizer = torch.optim.Adam(bf16.parameters(), lr=0.01)
        loss = (bf16(x).float().squeeze(-1) - y).pow(2).mean()
        loss.backward()
        optimizer.step()
        result.update(forward_dtype=seen[0], stored_dtype=str(bf16.layers[0].weight.dtype),
                      loss_finite=bool(torch.isfinite(loss)))
        (torch.save(result, f"{out_dir}/rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_fsdp_validation_with_uneven_batches_and_bf16_weights(tmp_path):
    mp.start_processes(_two_rank_checks, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       start_method="spawn")
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        # Validation gathers the model once: no forward call is a collective, so uneven batch counts
        # do not hang, and the summed metrics equal the unsharded model's.
        assert result["eval_matches"], rank
        # bf16: weights gathered and multiplied in bf16, the shards the optimizer updates stay fp32.
        assert result["forward_dtype"] == "torch.bfloat16"
        assert result["stored_dtype"] == "torch.float32"
        assert result["loss_finite"]
