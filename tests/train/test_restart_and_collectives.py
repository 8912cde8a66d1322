"""What a restarted torchrun worker does with the run directory it finds, and how a collective
that cannot complete is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paratrain.config import FitConfig
from paratrain.errors import CollectiveError, ConfigError
from paratrain.train import rundir
from paratrain.train.collectives import collective, is_transport_failure

GLOO_TIMEOUT = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] "
                "Timed out waiting 10000ms for recv operation to complete")
GLOO_PEER_GONE = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
                  "peer [127.0.0.1]:54710")


def _config(out: Path, **fields) -> FitConfig:
    return FitConfig.from_dict({"path": "/data.csv", "target": "y", "hidden": [8], "epochs": 3, "out": str(out),
                                **fields})


def test_a_restarted_worker_resumes_only_its_own_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    config = _config(out)
    assert rundir.restart_plan(out, config) == rundir.RESTART_NEW  # nothing there yet: start over
    rundir.write_config(out, config)
    assert rundir.restart_plan(out, config) == rundir.RESTART_NEW  # no checkpoint yet: start over
    (out / rundir.CHECKPOINT_FILE).write_bytes(b"")
    assert rundir.restart_plan(out, config) == rundir.RESTART_RESUME
    assert rundir.restart_plan(out, config.updated({"stop_after": 1})) == rundir.RESTART_RESUME  # one session's
    with pytest.raises(ConfigError, match=r"holds another run .*train.epochs: 3 there, 4 now.*choose another --out"):
        rundir.restart_plan(out, config.updated({"epochs": 4}))
    (out / rundir.SUMMARY_FILE).write_text(json.dumps({"status": "finished", "epochs": 3}))
    assert rundir.restart_plan(out, config) == rundir.RESTART_FINISHED
    (out / rundir.CONFIG_FILE).unlink()
    with pytest.raises(ConfigError, match="no config.yaml"):
        rundir.restart_plan(out, config)


def test_a_transport_failure_names_rank_collective_and_timeout():
    with pytest.raises(CollectiveError) as caught:
        with collective("epoch metrics all_reduce", rank=1, timeout_s=20):
            raise RuntimeError(GLOO_TIMEOUT)
    message = str(caught.value)
    assert message.startswith("rank 1: epoch metrics all_reduce did not complete within --timeout 20 s")
    assert "Timed out waiting 10000ms" in message and isinstance(caught.value.__cause__, RuntimeError)
    assert is_transport_failure(RuntimeError(GLOO_PEER_GONE))
    # An error of the model, not of the network, passes through unchanged.
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        with collective("ddp gradient all-reduce in backward", rank=0, timeout_s=20):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x8)")
    # The innermost block names it.
    with pytest.raises(CollectiveError, match="rank 0: checkpoint"):
        with collective("final barrier", rank=0, timeout_s=5):
            with collective("checkpoint", rank=0, timeout_s=5):
                raise RuntimeError(GLOO_PEER_GONE)


def test_a_sharded_checkpoint_failing_for_a_gone_peer_is_named_too():
    from torch.distributed.checkpoint.api import CheckpointException

    failure = CheckpointException("save failed", {1: (RuntimeError(GLOO_PEER_GONE), None)})
    with pytest.raises(CollectiveError, match="rank 0: checkpoint did not complete.*Connection closed by peer"):
        with collective("checkpoint", rank=0, timeout_s=5):
            raise failure
    local = CheckpointException("save failed", {0: (OSError("No space left on device"), None)})
    with pytest.raises(CheckpointException):
        with collective("checkpoint", rank=0, timeout_s=5):
            raise local
