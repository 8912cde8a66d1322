"""Workers on emulated hosts: network namespaces joined by tbf-limited veth links (needs root and iproute2).

Real namespaces, real processes, real gloo traffic: the bandwidth a 2-rank all_reduce gets across a
100mbit link, that nothing is left behind (a finished, a failed, an interrupted run, a build that
fails halfway, a launcher killed outright), fit across the link against loopback, and the parameter
server (TensorPipe) across namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from paratrain.cli import main
from paratrain.config import FitConfig
from paratrain.errors import ConfigError, WorkerError
from paratrain.launch import netns
from paratrain.launch.links import parse_link
from paratrain.launch.local import launch_local
from paratrain.train.checkpoint import load_torch
from paratrain.train.fit import fit
from tests.conftest import regression_frame
from tests.launch.netns_jobs import AllReduceJob, FailingJob
from tests.launch.processes import alive, wait_until

ROOT = Path(__file__).resolve().parents[2]
_CAN_EMULATE = (hasattr(os, "geteuid") and os.geteuid() == 0 and netns._find("ip") is not None
                and netns._find("tc") is not None)
needs_netns = pytest.mark.skipif(not _CAN_EMULATE, reason="emulated hosts need root and iproute2 (ip, tc)")

# tbf over veth holds ~96 Mbit/s at 100mbit (measured); the test allows 20% around that.
_EFFECTIVE_100MBIT_BITS_PER_S = 96e6


def _ours_left() -> list[str]:
    """Namespaces, links and tbf qdiscs of this test process and its launchers (dead or alive)."""
    return netns.leftovers()


@pytest.fixture(autouse=True)
def _nothing_left_behind():
    if _CAN_EMULATE:
        netns.remove_stale()
    yield


# -- no processes -----------------------------------------------------------------------------

@pytest.mark.parametrize(("argv", "message"), [
    (["--link", "0mbit", "--strategy", "ddp", "--workers", "2"], "link='0mbit' must be a rate > 0"),
    (["--link", "fast", "--strategy", "ddp", "--workers", "2"], "link='fast' must be 'loopback' or a rate"),
    (["--link", "100mbit", "--strategy", "hogwild", "--workers", "2"],
     "link='100mbit' puts each worker on its own host, but strategy='hogwild' runs only on one machine"),
    (["--link", "100mbit", "--strategy", "ddp", "--workers", "1"],
     "link='100mbit' joins workers on emulated hosts and needs workers >= 2, but workers=1"),
])
def test_bad_links_are_one_line_naming_field_rule_and_value(tmp_path, capsys, argv, message):
    data = tmp_path / "data.csv"
    regression_frame(rows=64).to_csv(data, index=False)
    assert main(["fit", "--data", str(data), "--target", "y", "--out", str(tmp_path / "run"), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("paratrain: error: ") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_yaml_link_reaches_the_config(tmp_path):
    config = FitConfig.from_dict({"path": "d.csv", "target": "y", "strategy": "ddp", "workers": 2,
                                  "link": "1GBIT"})
    assert config.parallel.link == "1gbit"


def test_without_root_the_error_says_so(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ConfigError, match=r"^--link 100mbit needs root \(network namespaces\); run as root "
                                          r"or use --link loopback$"):
        netns.check_can_emulate(parse_link("100mbit"))


def test_without_iproute2_the_error_names_the_commands(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns, "_find", lambda name: None if name == "tc" else "/usr/sbin/ip")
    with pytest.raises(ConfigError, match=r"needs the command tc, not found: install iproute2"):
        netns.check_can_emulate(parse_link("1gbit"))


def test_an_emulated_link_under_torchrun_is_refused(tmp_path, monkeypatch):
    data = tmp_path / "data.csv"
    regression_frame(rows=64).to_csv(data, index=False)
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)
    config = FitConfig.from_dict({"path": str(data), "target": "y", "strategy": "ddp", "workers": 2,
                                  "link": "100mbit", "out": str(tmp_path / "run")})
    with pytest.raises(ConfigError, match="but torchrun started them"):
        fit(config)


@needs_netns
def test_hosts_are_built_reachable_and_removed():
    started = time.perf_counter()
    with netns.emulated_hosts(parse_link("100mbit"), workers=3) as net:
        built_s = time.perf_counter() - started
        assert [host.address for host in net.hosts] == [f"{net.subnet[:-5]}.{rank + 2}" for rank in range(3)]
        assert net.store_host == f"{net.subnet[:-5]}.1"
        left = _ours_left()
        for host in net.hosts:
            assert host.namespace in left
        # Both ends of each veth shaped: the bridge side here, the namespace side there.
        assert sum(name.startswith("tbf qdisc on") for name in left) == 3
        inner = subprocess.run(["tc", "-n", net.hosts[1].namespace, "qdisc", "show", "dev", net.hosts[1].interface],
                               capture_output=True, text=True, check=True).stdout
        assert "tbf" in inner and "rate 100Mbit" in inner
        state = subprocess.run(["ip", "-n", net.hosts[2].namespace, "-o", "link", "show", "lo"],
                               capture_output=True, text=True, check=True).stdout
        assert "UP" in state
        # A rank reaches another rank and the store host (a refused connection is an answer).
        probe = textwrap.dedent(f"""
            import socket
            for address in ({net.hosts[0].address!r}, {net.store_host!r}):
                try:
                    socket.create_connection((address, 9), timeout=2).close()
                except ConnectionRefusedError:
                    pass
            """)
        subprocess.run(net.hosts[2].exec_prefix() + [sys.executable, "-c", probe], check=True, timeout=30)
        started = time.perf_counter()
    removed_s = time.perf_counter() - started
    assert _ours_left() == []
    assert built_s < 5 and removed_s < 5


@needs_netns
@pytest.mark.timeout(60)
def test_concurrent_launchers_get_subnets_of_their_own():
    script = textwrap.dedent("""
        from paratrain.launch.links import parse_link
        from paratrain.launch.netns import emulated_hosts
        with emulated_hosts(parse_link("1gbit"), 2) as net:
            print(net.subnet, net.hosts[0].namespace)
        """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with netns.emulated_hosts(parse_link("100mbit"), workers=2) as net:
        other = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                               check=True, timeout=50).stdout.split()
    assert other[0] != net.subnet and other[1] != net.hosts[0].namespace
    assert _ours_left() == []


@needs_netns
def test_a_build_that_fails_halfway_leaves_nothing(monkeypatch):
    # tc refuses the qdisc after ip made every namespace and veth.
    monkeypatch.setattr(netns, "_TBF_LATENCY", "not-a-time")
    with pytest.raises(ConfigError, match="tbf"):
        with netns.emulated_hosts(parse_link("100mbit"), workers=2):
            pass
    assert _ours_left() == []


@needs_netns
def test_what_a_dead_launcher_left_is_removed():
    dead = subprocess.Popen(["true"])
    dead.wait()
    netns._build(parse_link("1gbit"), 2, dead.pid)  # as if that launcher was killed with SIGKILL
    assert len(netns.leftovers(dead.pid)) >= 4
    removed = netns.remove_stale()
    assert f"paratrain-{dead.pid}-0" in removed
    assert netns.leftovers(dead.pid) == []


# -- real processes ---------------------------------------------------------------------------

@needs_netns
@pytest.mark.timeout(120)
def test_all_reduce_across_a_100mbit_link_runs_at_its_rate():
    nbytes = 3 * 1024 * 1024
    result = launch_local(AllReduceJob(nbytes=nbytes, repeat=3), 2, link=parse_link("100mbit"))
    assert result["correct"]
    assert result["gloo_ifname"].startswith(netns.LINK_PREFIX) and result["host_address"].startswith("10.213.")
    # Ring all-reduce on 2 ranks: each rank sends n bytes and receives n bytes.
    bits_per_s = nbytes * 8 / result["median_s"]
    assert 0.8 * _EFFECTIVE_100MBIT_BITS_PER_S <= bits_per_s <= 1.2 * _EFFECTIVE_100MBIT_BITS_PER_S, result
    assert _ours_left() == []


@needs_netns
@pytest.mark.timeout(120)
def test_a_failing_job_leaves_nothing_behind():
    with pytest.raises(WorkerError, match="worker rank 1 failed: ValueError: this job fails on purpose"):
        launch_local(FailingJob(), 2, link=parse_link("100mbit"))
    assert _ours_left() == []


@needs_netns
@pytest.mark.timeout(120)
def test_sigterm_to_the_launcher_leaves_nothing_behind(tmp_path):
    script = textwrap.dedent("""
        from paratrain.launch.links import parse_link
        from paratrain.launch.local import launch_local
        from tests.launch.netns_jobs import SleepJob
        launch_local(SleepJob(), 2, link=parse_link("100mbit"))
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        # Both workers are in their namespaces once a process runs in each.
        def workers_in_namespaces() -> bool:
            pids = subprocess.run(["ip", "netns", "pids", f"paratrain-{proc.pid}-1"], capture_output=True,
                                  text=True).stdout.split()
            return bool(pids)

        assert wait_until(workers_in_namespaces, timeout=60), proc.stderr
        time.sleep(2.0)  # into the job's sleep (past the imports and the rendezvous)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode != 0
        assert netns.leftovers(proc.pid) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert wait_until(lambda: not any(alive(pid) for pid in _pids_named(f"--parent-pid {proc.pid}")), timeout=10)


def _pids_named(fragment: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _fit(tmp_path: Path, data: Path, link: str, strategy: str) -> dict:
    config = FitConfig.from_dict({"path": str(data), "target": "y", "strategy": strategy, "workers": 2,
                                  "link": link, "epochs": 2, "batch_size": 32, "hidden": [16],
                                  "verbosity": 0, "out": str(tmp_path / f"{strategy}-{link}")})
    return fit(config).summary


@needs_netns
@pytest.mark.timeout(180)
def test_ddp_across_100mbit_trains_the_same_model_as_on_loopback(tmp_path):
    data = tmp_path / "data.csv"
    regression_frame(rows=256).to_csv(data, index=False)
    summaries = {link: _fit(tmp_path, data, link, "ddp") for link in ("loopback", "100mbit")}
    assert all(summary["status"] == "finished" for summary in summaries.values())
    models = {link: load_torch(tmp_path / f"ddp-{link}" / "checkpoint.pt")["model"] for link in summaries}
    for name, value in models["loopback"].items():
        torch.testing.assert_close(models["100mbit"][name], value, rtol=0, atol=1e-6)
    assert _ours_left() == []


@needs_netns
@pytest.mark.timeout(120)
def test_the_parameter_server_runs_across_namespaces(tmp_path, capsys):
    # Rank 1 reaches rank 0's RPC store and TensorPipe only over the link: a store on
    # loopback, or TensorPipe on lo, would fail the run.
    data = tmp_path / "data.csv"
    regression_frame(rows=256).to_csv(data, index=False)
    code = main(["fit", "--data", str(data), "--target", "y", "--strategy", "async", "--workers", "2",
                 "--link", "1gbit", "--epochs", "2", "--batch-size", "32", "--hidden", "16", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "summary.json").is_file()
    assert _ours_left() == []
