"""`localsgd:PERIOD`: config errors, equivalence with synchronous training where theory says so, accuracy and bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paratrain.config import FitConfig, ParallelConfig
from paratrain.errors import ConfigError
from paratrain.strategies import create_strategy
from paratrain.train.fit import fit
from tests.conftest import assert_states_close, model_state

DENSE_BYTES = 4 * (5 * 32 + 32 + 32 * 32 + 32 + 32 + 1)  # fp32 parameters of the 5-32-32-1 MLP


def _config(table: Path, out: Path, **fields) -> FitConfig:
    base = {"path": str(table), "target": "y", "hidden": [32, 32], "seed": 0, "precision": "fp32", "verbosity": 0, "out": str(out)}
    return FitConfig.from_dict({**base, **fields})


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("strategy", "message"), [
    ("localsgd", r"needs a period, e\.g\. localsgd:8"),
    ("localsgd:0", r"PERIOD must be an integer >= 1"),
    ("localsgd:2.5", r"PERIOD must be an integer >= 1"),
    ("localsgd:abc", r"PERIOD must be an integer >= 1"),
])
def test_localsgd_needs_an_integer_period(strategy, message):
    with pytest.raises(ConfigError, match=message):
        ParallelConfig(strategy=strategy, workers=2)


def test_localsgd_is_registered():
    config = ParallelConfig(strategy="localsgd:8", workers=2, options={"sync_warmup": 5})
    assert config.strategy == "localsgd:8"
    assert create_strategy(config.strategy, config).sync_warmup == 5


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fields", [{"strategy": "localsgd:1"}, {"strategy": "localsgd:1000", "sync_warmup": 1000}],
                         ids=["average-every-step", "all-warmup"])
def test_localsgd_equals_synchronous_sgd_when_theory_says_so(table, tmp_path, fields):
    """SGD with momentum is linear in the gradients: averaging parameters after every step
    (period 1) gives exactly the synchronous update, and so do synchronous warm-up steps.

    Compared with one process at batch 64 (= 2 ranks x 32), rows not reshuffled so that
    both see the same batches (see test_ddp_equivalence); float32 tolerance 2e-5 after 16 steps.
    """
    common = {"epochs": 2, "shuffle": False, "val_fraction": 0.0, "optimizer": "sgd", "lr": 0.05}
    single = fit(_config(table, tmp_path / "single", batch_size=64, **common))
    local = fit(_config(table, tmp_path / "local", batch_size=32, workers=2, **common, **fields))
    assert_states_close(model_state(single.run_dir), model_state(local.run_dir), atol=2e-5)


@pytest.mark.timeout(180)
def test_localsgd_learns_like_single_and_sends_an_eighth(table, tmp_path):
    """localsgd:8 with Adam: val_loss within 30% of `single` after 30 epochs, and 1/8 of ddp's bytes.

    Tolerance as for the compressors (test_compression): `single` reaches ~0.02,
    row order alone moves that by ~10%; local SGD was observed 2% above.
    Bytes: 30 epochs x 7 steps = 210 steps, 26 averages of all parameters: 210/26 = 8.08x.
    """
    common = {"epochs": 30, "optimizer": "adam", "lr": 3e-3}
    single = fit(_config(table, tmp_path / "single", batch_size=64, **common)).summary["val_loss"]
    local = fit(_config(table, tmp_path / "local", batch_size=32, workers=2, strategy="localsgd:8", **common))
    assert local.summary["val_loss"] <= 1.3 * single, (local.summary["val_loss"], single)
    records = _records(local.run_dir)
    sent_per_step = sum(r["comm_bytes_per_step"] for r in records) / len(records)
    assert DENSE_BYTES / sent_per_step == pytest.approx(210 / 26, rel=1e-6)


@pytest.mark.timeout(180)
def test_sync_warmup_sends_every_step_then_every_period(table, tmp_path):
    """sync_warmup=7 covers epoch 1 (7 steps): dense every step; afterwards one average per 4 steps."""
    result = fit(_config(table, tmp_path / "run", batch_size=32, workers=2, strategy="localsgd:4", sync_warmup=7,
                         epochs=3))
    records = _records(result.run_dir)
    assert records[0]["comm_bytes_per_step"] == DENSE_BYTES
    # Steps 8-21 are local; averages after steps 11, 15 and 19: one in epoch 2 (steps 8-14), two in epoch 3.
    assert [r["comm_bytes_per_step"] * 7 / DENSE_BYTES for r in records[1:]] == pytest.approx([1, 2])


@pytest.mark.timeout(240)
def test_localsgd_resume_without_a_ranks_own_checkpoint_starts_every_worker_from_rank_0(table, tmp_path):
    """Rank 1's checkpoint lost (or from another epoch): the run still resumes and finishes, every
    worker from rank 0's model, so it is no longer the uninterrupted run but still trains."""
    from paratrain.train.fit import resume

    common = {"batch_size": 32, "workers": 2, "strategy": "localsgd:4", "epochs": 4, "optimizer": "adam",
              "lr": 0.01}
    whole = fit(_config(table, tmp_path / "whole", **common))
    stopped = fit(_config(table, tmp_path / "parts", stop_after=2, **common))
    (Path(stopped.run_dir) / "checkpoint.rank1.pt").unlink()
    resumed = resume(stopped.run_dir)
    assert resumed.summary["status"] == "finished"
    assert [r["epoch"] for r in _records(resumed.run_dir)] == [1, 2, 3, 4]
    assert resumed.summary["val_loss"] <= 1.3 * whole.summary["val_loss"]


@pytest.mark.timeout(240)
def test_localsgd_resume_averages_on_the_same_steps(table, tmp_path):
    """Period 4 does not divide the 7 steps of an epoch: the step count is in the checkpoint, so
    a resumed run averages after the same steps as an uninterrupted one (same bytes per epoch)."""
    from paratrain.train.fit import resume

    common = {"batch_size": 32, "workers": 2, "strategy": "localsgd:4", "epochs": 5}
    whole = fit(_config(table, tmp_path / "whole", **common))
    stopped = fit(_config(table, tmp_path / "parts", stop_after=2, **common))
    resumed = resume(stopped.run_dir)
    assert resumed.summary["status"] == "finished"
    sent = [r["comm_bytes_per_step"] for r in _records(whole.run_dir)]
    assert [r["comm_bytes_per_step"] for r in _records(resumed.run_dir)] == sent
    # Averages after steps 4, 8, ..., 32 of 35: 1, 2, 2, 2, 1 per epoch (a finished run also
    # averages once at the end, outside the epochs' per-step traffic).
    assert [s * 7 / DENSE_BYTES for s in sent] == pytest.approx([1, 2, 2, 2, 1])
