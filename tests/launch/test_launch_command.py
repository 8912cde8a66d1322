"""`paratrain launch` without --emit, short of starting a job: torchrun's arguments and environment
for a node, the workers' store bound to one address, and the errors of bad flags.

The job itself, on two emulated machines, is in test_two_nodes.py.
"""

from __future__ import annotations

import os
import socket

import pytest

from paratrain.cli import main
from paratrain.launch.launch_config import LaunchConfig
from paratrain.launch.store import torchrun_worker_store
from paratrain.launch.torchrun_env import TorchrunEnv
from paratrain.launch.torchrun_launch import NodeNetwork, torchrun_invocation
from tests.conftest import run_cli
from tests.launch.processes import HAS_PROC, listening_addresses


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_torchrun_invocation_of_a_node():
    config = LaunchConfig(nnodes="1:2", node_rank=1, master="node0.example:29400", command=("fit", "--demo"),
                          nproc_per_node=2, max_restarts=3, run_id="job-7", rdzv_timeout_s=90.5)
    network = NodeNetwork(interface="eth1", address="10.0.0.2", master_address="10.0.0.1")
    argv, env = torchrun_invocation(config, network, {"PATH": "/bin", "GLOO_SOCKET_IFNAME": "lo"}, cores=8)

    assert argv[-4:] == ["-m", "paratrain", "fit", "--demo"]
    assert (_value(argv, "--nnodes"), _value(argv, "--nproc-per-node"), _value(argv, "--max-restarts")) == (
        "1:2", "2", "3")
    assert (_value(argv, "--rdzv-backend"), _value(argv, "--rdzv-endpoint"), _value(argv, "--rdzv-id")) == (
        "c10d", "10.0.0.1:29400", "job-7")
    assert _value(argv, "--rdzv-conf") == "is_host=false,join_timeout=91,read_timeout=91"
    assert _value(argv, "--local-addr") == "10.0.0.2"
    assert "--node-rank" not in argv  # c10d numbers the nodes; torchrun would warn that it ignores it
    assert env["GLOO_SOCKET_IFNAME"] == env["TP_SOCKET_IFNAME"] == "eth1"  # the asked-for one wins
    assert env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] == "1"
    assert env["OMP_NUM_THREADS"] == "4" and env["PATH"] == "/bin"
    _, env = torchrun_invocation(config, network, {"OMP_NUM_THREADS": "1"}, cores=8)
    assert env["OMP_NUM_THREADS"] == "1"  # the user's own setting stays


@pytest.mark.skipif(not HAS_PROC, reason="reads listening sockets from /proc")
def test_workers_store_listens_on_master_addr_only():
    with socket.socket() as probe:  # a port free now on loopback, as torchrun's agent picks it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = TorchrunEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, master_addr="127.0.0.1",
                      master_port=port, run_id="job")
    store = torchrun_worker_store(env, timeout_s=10)
    assert store is not None and store.port == port
    listening = [address for address in listening_addresses(os.getpid()) if address.endswith(f":{port}")]
    assert listening == [f"127.0.0.1:{port}"]
    del store
    # torch's env:// store where no address can be bound, or the agent hosts it.
    assert torchrun_worker_store(TorchrunEnv(**{**env.__dict__, "master_addr": "localhost"}), 10) is None
    assert torchrun_worker_store(TorchrunEnv(**{**env.__dict__, "agent_hosts_store": True}), 10) is None


@pytest.mark.parametrize(("flags", "message"), [
    (["--nnodes", "2", "--node-rank", "0", "--", "fit"], "--master HOST:PORT is needed"),
    (["--nnodes", "two", "--node-rank", "0", "--master", "10.0.0.1:29400", "--", "fit"], "nnodes='two'"),
    (["--nnodes", "2", "--master", "10.0.0.1:29400", "--", "fit"], "--node-rank is needed with --nnodes 2"),
    (["--nnodes", "2", "--node-rank", "2", "--master", "10.0.0.1:29400", "--", "fit"], "node_rank=2 must be in 0..1"),
    (["--nnodes", "2", "--node-rank", "1", "--master", "127.0.0.1:29400", "--interface", "no-such-if0", "--",
      "fit"], "--interface no-such-if0: no such network interface"),
    (["--nnodes", "2", "--node-rank", "1", "--master", "10.0.0.1:29400", "--"], "needs the paratrain command"),
])
def test_bad_launch_flags_fail_with_one_clear_line(capsys, flags, message):
    # In this process: every case reaches the same one-line error path that run_cli shows below.
    assert main(["launch", *flags]) != 0
    assert message in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_bad_launch_flag_fails_the_command():
    done = run_cli("launch", "--nnodes", "2", "--node-rank", "1", "--master", "no-such-host.invalid:29400",
                   "--", "fit", "--demo")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "paratrain: error: --master no-such-host.invalid:29400: the host 'no-such-host.invalid' does not resolve "
        "to an IPv4 address on this machine; give node 0's address (e.g. 10.0.0.1:29400)"]
