"""`hogwild`: parameters really shared between processes, nothing left in /dev/shm, real runs.

Conformance tolerance: lock-free updates race and their order depends on
timing, so runs are not reproducible. On this data (8 epochs, batch 32, Adam
lr 0.01 with a cosine schedule) `single` reaches a validation loss of
~0.04-0.05 (R^2 ~0.95) over seeds 0-2, and `hogwild` with 2 workers
0.76x-1.29x of it. test_conformance.py allows 1.5x; here R^2 > 0.85 is required, which a model that
did not learn (R^2 <= ~0) or learned little cannot reach.
"""

from __future__ import annotations

import datetime
import os
import signal
import stat
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from paratrain.config import FitConfig
from paratrain.errors import ConfigError
from paratrain.strategies.base import WorkerContext
from paratrain.strategies.hogwild import (
    LAUNCH_ID_VARIABLE,
    SHM_PREFIX,
    HogwildStrategy,
    remove_shared_memory,
    shared_memory_dir,
)
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit, resume
from tests.conftest import assert_states_close, model_state, regression_frame
from tests.launch.processes import alive, argument, children, kill_group, start_fit, wait_for_file, wait_until

MIN_R2 = 0.85


def _config(tmp_path, data, name, **fields):
    base = {"path": str(data), "target": "y", "hidden": [32, 32], "epochs": 8, "batch_size": 32, "seed": 0, "precision": "fp32",
            "lr": 0.01, "schedule": "cosine", "verbosity": 0, "out": str(tmp_path / name)}
    return FitConfig.from_dict({**base, **fields})


def _shm_files() -> set[str]:
    return {name for name in os.listdir(shared_memory_dir()) if name.startswith(SHM_PREFIX)}


def _share_and_write(rank: int, port: int, out: str) -> None:
    """Rank 1 writes into its parameters; rank 0 must see it without any message."""
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=datetime.timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)  # different initial values: rank 0's must win
        model = torch.nn.Linear(3, 2)
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        strategy = HogwildStrategy()
        strategy.wrap_model(model, WorkerContext(rank=rank, world_size=2))
        if rank == 1:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        strategy.barrier()
        seen = {k: v.clone() for k, v in model.state_dict().items()}
        strategy.barrier()
        strategy.teardown()
        with torch.no_grad():  # after teardown the parameters are private again
            for p in model.parameters():
                p.mul_(0.0 if rank == 1 else 1.0)
        strategy.barrier()
        torch.save({"initial": initial, "seen": seen, "final": model.state_dict()}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_parameters_are_shared_between_processes_and_the_file_is_removed(tmp_path):
    before = _shm_files()
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=60))
    mp.spawn(_share_and_write, args=(store.port, str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    expected = {k: v + 1.0 for k, v in rank0["initial"].items()}  # rank 0's start, rank 1's write
    for seen in (rank0["seen"], rank1["seen"]):
        assert_states_close(seen, expected, atol=0.0)
    assert_states_close(rank0["final"], expected, atol=0.0)  # rank 1 zeroing its private copy did not reach it
    assert _shm_files() == before


def test_hogwild_refuses_a_job_on_several_machines(monkeypatch):
    # A torchrun worker of a 2-machine job (torchrun sets all of these).
    for name, value in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                        "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="one machine"):
        HogwildStrategy()


@pytest.mark.timeout(180)
def test_two_hogwild_workers_learn(tmp_path, regression_csv):
    before = _shm_files()
    run = fit(_config(tmp_path, regression_csv, "hogwild", strategy="hogwild", workers=2))
    assert run.summary["workers"] == 2
    # Its loss against `single`'s (and resume) is checked in test_conformance.py.
    assert run.summary["val_r2"] > MIN_R2
    assert _shm_files() == before
    # The last checkpoint is written after every worker finished its last step:
    # the saved model is that shared state.
    last = load_torch(run.run_dir / "checkpoint.pt")["model"]
    assert_states_close(model_state(run.run_dir), last, atol=0.0)


def _leave_before_mapping(rank: int, port: int, out: str) -> None:
    """Rank 1 learns the file's name and dies before mapping it: rank 0 must not leave the file."""
    store = dist.TCPStore("127.0.0.1", port, 2, is_master=False, timeout=datetime.timedelta(seconds=30))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    if rank == 1:
        name = [None]
        dist.broadcast_object_list(name, src=0)
        os._exit(0)  # as if killed: no clean-up of any kind
    try:
        HogwildStrategy().wrap_model(torch.nn.Linear(3, 2), WorkerContext(rank=0, world_size=2))
    except Exception as exc:  # noqa: BLE001 - the barrier fails: its peer is gone
        Path(out, "rank0.txt").write_text(type(exc).__name__)


@pytest.mark.timeout(120)
def test_the_file_is_removed_when_a_peer_dies_while_setting_up(tmp_path, monkeypatch):
    launch_id = f"test{os.getpid()}"
    monkeypatch.setenv(LAUNCH_ID_VARIABLE, launch_id)  # names the file: only this test's file is looked for
    store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=60))
    mp.spawn(_leave_before_mapping, args=(store.port, str(tmp_path)), nprocs=2)
    assert (tmp_path / "rank0.txt").exists(), "rank 0 set up without its peer"
    assert not [name for name in _shm_files() if name.startswith(f"{SHM_PREFIX}{launch_id}-")]


def test_the_launcher_removes_only_its_own_files():
    directory = shared_memory_dir()
    mine, other = (os.path.join(directory, f"{SHM_PREFIX}test{os.getpid()}{tag}-0.bin") for tag in ("a", "b"))
    for path in (mine, other):
        open(path, "wb").close()
    try:
        remove_shared_memory(f"test{os.getpid()}a")
        assert not os.path.exists(mine) and os.path.exists(other)
    finally:
        for path in (mine, other):
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.timeout(240)
@pytest.mark.skipif(not Path("/proc/self/map_files").exists(), reason="reads mappings through /proc")
def test_the_shared_file_is_private_and_nothing_is_left_after_the_launcher_is_killed(tmp_path):
    data = tmp_path / "data.csv"
    regression_frame(rows=2000).to_csv(data, index=False)
    run_dir = tmp_path / "run"
    proc = start_fit(data, run_dir, "--strategy", "hogwild", "--workers", "2", "--epochs", "200",
                     "--batch-size", "16", "--hidden", "16")
    try:
        wait_for_file(proc, run_dir / "checkpoint.pt")
        assert wait_until(lambda: len(children(proc.pid)) == 2, timeout=30)
        workers = children(proc.pid)
        launch_id = Path(argument(workers[0], "--scratch")).name.removeprefix("paratrain-launch-")
        modes = {}
        for pid in workers:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if SHM_PREFIX in line:
                    # Unlinked already, but still mapped: the mapping shows the file's mode.
                    assert line.endswith("(deleted)"), line
                    assert f"{SHM_PREFIX}{launch_id}-" in line
                    try:
                        modes[pid] = stat.S_IMODE(os.stat(f"/proc/{pid}/map_files/{line.split()[0]}").st_mode)
                    except PermissionError:
                        pytest.skip("reading /proc/PID/map_files needs CAP_SYS_ADMIN")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in workers), timeout=10)
    finally:
        kill_group(proc)
    assert set(modes) == set(workers), "every worker maps the shared parameters"
    assert set(modes.values()) == {0o600}, {pid: oct(mode) for pid, mode in modes.items()}
    assert not [name for name in _shm_files() if name.startswith(f"{SHM_PREFIX}{launch_id}-")]
