"""`paratrain launch` on two emulated machines: one torchrun agent in each of two network
namespaces (needs root and iproute2).

The namespaces reach each other only through their veths (and the bridge between them),
so the job goes over a real network path: the rendezvous at node 0's address, gloo on
the veth interfaces. Whatever listens in a namespace was started by the test, so the
namespaces also show that nothing listens on every address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from paratrain.launch import netns
from paratrain.launch.links import parse_link
from tests.conftest import assert_states_close, model_state, run_cli
from tests.curvefit.test_distributed import _curve

_CAN_EMULATE = (hasattr(os, "geteuid") and os.geteuid() == 0 and netns._find("ip") is not None
                and netns._find("tc") is not None and netns._find("ss") is not None)
RENDEZVOUS_PORT = 29400  # free: the namespaces are new
WILDCARDS = ("0.0.0.0", "*", "[::]", "::")


def _listeners(namespace: str) -> set[str]:
    """'address:port' of every TCP socket listening in ``namespace`` now."""
    shown = subprocess.run([netns._command("ss"), "-N", namespace, "-ltnH"], capture_output=True, text=True,
                           timeout=30).stdout
    return {line.split()[3] for line in shown.splitlines() if line.strip()}


def _pids(namespace: str) -> list[int]:
    shown = subprocess.run([netns._command("ip"), "netns", "pids", namespace], capture_output=True, text=True,
                           timeout=30).stdout
    return [int(pid) for pid in shown.split()]


@pytest.mark.skipif(not _CAN_EMULATE, reason="emulated machines need root and iproute2 (ip, tc, ss)")
@pytest.mark.timeout(420)
def test_launch_on_two_machines_matches_two_local_workers(tmp_path, regression_csv):
    fit = ["fit", "--data", str(regression_csv), "--target", "y", "--strategy", "ddp", "--hidden", "16",
           "--epochs", "2", "--precision", "fp32", "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    seen: dict[str, set[str]] = {}
    with netns.emulated_hosts(parse_link("1gbit"), workers=2) as net:
        master = f"{net.hosts[0].address}:{RENDEZVOUS_PORT}"
        seen = {host.namespace: set() for host in net.hosts}
        procs: list[subprocess.Popen] = []
        done = threading.Event()

        def watch_listeners() -> None:
            # Sampled while the job runs: the rendezvous store lives through all of it, the
            # workers' store and gloo's sockets while their process group does.
            while not done.wait(0.05):
                for namespace in seen:
                    seen[namespace] |= _listeners(namespace)

        watcher = threading.Thread(target=watch_listeners, daemon=True)
        try:
            for host in net.hosts:
                launch = [sys.executable, "-m", "paratrain", "launch", "--nnodes", "2", "--node-rank",
                          str(host.rank), "--master", master, "--nproc-per-node", "1", "--rdzv-timeout", "120",
                          "--", *fit, "--out", str(tmp_path / "launch")]
                procs.append(subprocess.Popen(host.exec_prefix() + launch, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True))
            watcher.start()
            outputs = [proc.communicate(timeout=240) for proc in procs]
            done.set()
            watcher.join(timeout=30)
            for proc, (_, stderr) in zip(procs, outputs):
                assert proc.returncode == 0, stderr[-3000:]
            # Every process of the job ended with its agent: none left in either machine.
            left = {host.namespace: _pids(host.namespace) for host in net.hosts}
            assert left == {host.namespace: [] for host in net.hosts}
        finally:
            done.set()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
            for host in net.hosts:  # what a failed run left (workers of a killed agent)
                for pid in _pids(host.namespace):
                    os.kill(pid, 9)

        # Nothing listened on every address; the rendezvous listened on node 0's address.
        for namespace, listeners in seen.items():
            assert not [address for address in listeners if address.rpartition(":")[0] in WILDCARDS], (
                namespace, sorted(listeners))
        assert master in seen[net.hosts[0].namespace]
        # The sampling saw the workers too (gloo's listener on node 1), not just the rendezvous.
        assert any(address.startswith(f"{net.hosts[1].address}:") for address in seen[net.hosts[1].namespace])

    summaries = [out for out, _ in outputs if out.strip()]
    assert len(summaries) == 1  # printed once, by global rank 0, whichever node it is on
    local = run_cli(*fit, "--workers", "2", "--out", str(tmp_path / "local"), timeout=180)
    assert local.returncode == 0, local.stderr[-3000:]
    assert_states_close(model_state(Path(tmp_path / "launch")), model_state(Path(tmp_path / "local")), atol=1e-6)


def _launch_on_both(net, command: list[str], timeout: float = 240) -> list[tuple[str, str]]:
    """Run `paratrain launch ... -- command` on both machines; (stdout, stderr) of each, after checking that
    both exited 0 and that no process is left in either namespace."""
    master = f"{net.hosts[0].address}:{RENDEZVOUS_PORT}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen] = []
    try:
        for host in net.hosts:
            launch = [sys.executable, "-m", "paratrain", "launch", "--nnodes", "2", "--node-rank", str(host.rank),
                      "--master", master, "--rdzv-timeout", "120", "--", *command]
            procs.append(subprocess.Popen(host.exec_prefix() + launch, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outputs = [proc.communicate(timeout=timeout) for proc in procs]
        for proc, (_, stderr) in zip(procs, outputs):
            assert proc.returncode == 0, stderr[-3000:]
        assert {host.namespace: _pids(host.namespace) for host in net.hosts} == {h.namespace: [] for h in net.hosts}
        return outputs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for host in net.hosts:
            for pid in _pids(host.namespace):
                os.kill(pid, 9)


@pytest.mark.skipif(not _CAN_EMULATE, reason="emulated machines need root and iproute2 (ip, tc, ss)")
@pytest.mark.timeout(420)
def test_curvefit_and_netcheck_across_two_machines(tmp_path):
    """A curve fit's rows split over two machines gives the local two-worker fit (identical reductions);
    netcheck times the link between them (1 Gbit/s, emulated) and reports once."""
    x, y = _curve()
    data = tmp_path / "curve.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(data, index=False)
    curvefit = ["curvefit", "--formula", "a*exp(-b*x) + c", "--data", str(data), "--target", "y", "--p0", "1,1,0",
                "--starts", "16", "--json"]
    with netns.emulated_hosts(parse_link("1gbit"), workers=2) as net:
        fitted = _launch_on_both(net, curvefit)
        checked = _launch_on_both(net, ["netcheck", "--seconds", "15", "--bandwidth", "1gbit",
                                        "--json", str(tmp_path / "net.json")])
    across = [json.loads(out) for out, _ in fitted if out.strip()]
    assert len(across) == 1  # global rank 0 alone prints
    local = run_cli(*curvefit, "--workers", "2", timeout=200)
    assert local.returncode == 0, local.stderr[-3000:]
    alone = json.loads(local.stdout)
    for name, value in alone["params"].items():
        assert across[0]["params"][name] == pytest.approx(value, rel=1e-12, abs=0)
    assert across[0]["rss"] == pytest.approx(alone["rss"], rel=1e-12, abs=0)
    assert sum(out.count("all-reduce: latency") for out, _ in checked) == 1
    network = json.loads((tmp_path / "net.json").read_text())
    assert network["where"] == "2 machines x 1 (torchrun)"
    assert 0.5e9 < network["bandwidth_bits_per_s"] < 1.5e9  # the veths' token buckets hold it to 1 Gbit/s
