"""`paratrain launch` without --emit: this node's torchrun agent, over torchrun's own c10d rendezvous.

paratrain adds no rendezvous of its own. It works out, per node, what torchrun and gloo
need to run across machines and that a bare ``torchrun`` leaves to the user:

- the interface to use (--interface, else the one that routes to --master) and this node's
  IPv4 address on it: torchrun's ``--local-addr`` (what the other nodes connect to, and
  MASTER_ADDR of the workers' store when this node holds global rank 0), and
  ``GLOO_SOCKET_IFNAME`` / ``TP_SOCKET_IFNAME`` for gloo's and TensorPipe's sockets;
- ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``: elastic restarts on gloo fail with "Connection
  refused" without it, and it keeps the agent from opening a second store;
- ``OMP_NUM_THREADS`` split between this node's workers.

Nothing listens on every address. TCPStore's server binds the wildcard address whatever
host it is given, so node 0 hosts the rendezvous store itself, on a socket bound to the
master's address (launch/store.py hosted_store), and every agent, node 0's included,
joins it as a client (``is_host=false``). The workers' own process-group store on global
rank 0 is bound to MASTER_ADDR the same way (launch/store.py torchrun_worker_store).

Example (on each of two machines, R = 0 or 1):
    paratrain launch --nnodes 2 --node-rank R --master 10.0.0.1:29400 -- fit --data d.csv --target y ...
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from paratrain.errors import ConfigError, ParatrainError
from paratrain.launch import interfaces
from paratrain.launch.launch_config import LaunchConfig, threads_per_worker, torchrun_args
from paratrain.launch.store import HOST_ADDRESS_VARIABLE

log = logging.getLogger(__name__)


class LaunchError(ParatrainError, RuntimeError):
    """This node could not join the job: names the stage and torchrun's reason."""


SOCKET_INTERFACE_VARIABLES = ("GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME")
"""Where gloo (collectives) and TensorPipe (RPC) bind their sockets: the interface asked for."""


@dataclass(frozen=True)
class NodeNetwork:
    """How this node reaches the others."""

    interface: str
    """The interface every socket of the job binds on this node."""
    address: str
    """This node's IPv4 address on it: torchrun's --local-addr."""
    master_address: str
    """--master's host as an IPv4 address: where node 0's rendezvous store listens."""


def node_network(config: LaunchConfig) -> NodeNetwork:
    """Look up the interface and addresses this node uses; errors name the flag and its value."""
    master_address = interfaces.resolve_ipv4(config.master_host)
    if master_address is None:
        raise ConfigError(f"--master {config.master}: the host {config.master_host!r} does not resolve to an "
                          "IPv4 address on this machine; give node 0's address (e.g. 10.0.0.1:29400)")
    if master_address == "0.0.0.0":
        raise ConfigError(f"--master {config.master}: give node 0's address that the other machines reach, "
                          "not the wildcard address (the rendezvous listens on that one address only)")
    if config.interface is not None:
        interface = config.interface
        if interface not in interfaces.interface_names():
            known = ", ".join(interfaces.interface_names()) or "none found"
            raise ConfigError(f"--interface {interface}: no such network interface on this machine "
                              f"(those here: {known})")
    else:
        source = interfaces.source_address_towards(master_address)
        if source is None:
            raise ConfigError(f"--master {config.master}: no network route from this machine leads to "
                              f"{master_address}; check the address, or name the interface with --interface")
        found = interfaces.interface_with_address(source)
        if found is None:
            raise ConfigError(f"--master {config.master}: this machine reaches {master_address} from "
                              f"{source}, which no interface holds as its address; name one with --interface")
        interface = found
    address = interfaces.interface_ipv4(interface)
    if address is None:
        raise ConfigError(f"--interface {interface}: the interface has no IPv4 address; "
                          "give the one that connects the machines (ip -4 addr shows them)")
    return NodeNetwork(interface, address, master_address)


def torchrun_invocation(config: LaunchConfig, network: NodeNetwork, environ: Mapping[str, str],
                        cores: int) -> tuple[list[str], dict[str, str]]:
    """torchrun's arguments and the environment of its agent (and so of the workers) on this node.

    Pure: starts nothing, reads nothing. ``environ`` is the environment to extend; ``cores``
    this machine's usable cores.

    Example:
        >>> config = LaunchConfig(nnodes="2", node_rank=1, master="10.0.0.1:29400", command=("fit", "--demo"))
        >>> argv, env = torchrun_invocation(config, NodeNetwork("eth0", "10.0.0.2", "10.0.0.1"), {}, cores=8)
        >>> argv[argv.index("--rdzv-endpoint") + 1], argv[argv.index("--local-addr") + 1], env["GLOO_SOCKET_IFNAME"]
        ('10.0.0.1:29400', '10.0.0.2', 'eth0')
    """
    # Node 0's launcher hosts the store (bound to one address); every agent is its client. The store
    # client's read timeout lets a node started before node 0 wait for it (by hand, or a scheduler).
    argv = torchrun_args(config, f"{network.master_address}:{config.master_port}", config.run_id, "false",
                         read_timeout=True, local_addr=network.address)
    env = dict(environ)
    for name in SOCKET_INTERFACE_VARIABLES:
        env[name] = network.interface
    env["TORCH_DISABLE_SHARE_RDZV_TCP_STORE"] = "1"
    # A worker that hosts a store for its peers (the parameter server) listens on this address.
    env[HOST_ADDRESS_VARIABLE] = network.address
    # The user's own setting wins; else the cores are split, as the local launcher does
    # (more threads than cores thrash).
    env.setdefault("OMP_NUM_THREADS", str(threads_per_worker(cores, config.nproc_per_node)))
    return argv, env


def run_torchrun(config: LaunchConfig) -> int:
    """Start this node's torchrun agent and wait for it; returns the job's exit status on this node.

    torchrun runs in this process (``torch.distributed.run.main``), not as a child: one
    process per node to signal and to watch; SIGTERM/SIGINT reach torchrun's agent
    directly, which stops its workers; and the rendezvous store that node 0 hosts here
    lives exactly as long as the agent that uses it.
    """
    from paratrain.launch.resources import usable_cores

    if config.node_rank is None:
        raise ConfigError("node_rank=None: starting a node needs its rank (--node-rank), 0 on the machine at "
                          "--master; only --emit leaves it to the scheduler")
    network = node_network(config)
    argv, env = torchrun_invocation(config, network, os.environ, usable_cores())
    log.info("node %s: interface %s, address %s, rendezvous at %s:%s", config.node_rank, network.interface,
             network.address, network.master_address, config.master_port)
    with _rendezvous_store(config, network), _environment(env), _ends_a_stuck_agent(config.rdzv_timeout_s + 30):
        if config.node_rank != 0:
            _wait_for_rendezvous(config, network.master_address)
        return _run_agent(argv, config.master, config.rdzv_timeout_s)


@contextlib.contextmanager
def _rendezvous_store(config: LaunchConfig, network: NodeNetwork) -> Iterator[None]:
    """On node 0, the rendezvous store, listening on the master's address only, while the block runs."""
    if config.node_rank != 0:
        yield
        return
    from paratrain.launch.store import hosted_store

    try:
        store = hosted_store(network.master_address, None, config.rdzv_timeout_s, port=config.master_port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--master {config.master}: port {config.master_port} is in use on this machine "
                              "(another job's rendezvous?); choose another port, the same on every node") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--master {config.master}: {network.master_address} is not an address of this "
                              "machine, but --node-rank 0 hosts the rendezvous there; run node 0 on the machine "
                              "that has it, or give this machine's address") from None
        raise
    try:
        yield
    finally:
        del store  # stops the server


def _wait_for_rendezvous(config: LaunchConfig, address: str, poll_s: float = 0.5) -> None:
    """Wait, quietly, until node 0's rendezvous store takes connections.

    A node may be started before node 0. torchrun's store client would wait too, but prints
    a C++ stack trace for every failed try; a plain connection (opened and closed at once,
    which the store ignores) says nothing until it succeeds or the time is up.
    """
    deadline = time.monotonic() + config.rdzv_timeout_s
    while True:
        try:
            with socket.create_connection((address, config.master_port), timeout=max(0.1, min(5.0, poll_s * 4))):
                return
        except OSError as exc:
            if time.monotonic() + poll_s >= deadline:
                raise LaunchError(f"--master {config.master}: node 0's rendezvous store did not answer within "
                                  f"--rdzv-timeout {config.rdzv_timeout_s:g} s ({exc.strerror or exc}); start node 0 "
                                  "(paratrain launch --node-rank 0 ...) and check that this machine reaches that "
                                  "address and port") from None
        time.sleep(poll_s)


@contextlib.contextmanager
def _ends_a_stuck_agent(grace_s: float, poll_s: float = 1.0) -> Iterator[None]:
    """End this process when torchrun's agent outlives its workers by ``grace_s`` seconds.

    Why: when a node's link is cut, the agent on the far side blocks in a rendezvous-store call
    across the dead link (torch's store client does not give up at its timeout), holding the lock
    its monitoring loop needs, so it never sees that its workers ended; it stays until the kernel's
    TCP retransmissions give up (~15 min at Linux's default tcp_retries2). An agent legitimately
    without workers is waiting in a rendezvous, which its join timeout (--rdzv-timeout) bounds;
    ``grace_s`` is longer than that. Before its first workers the agent is left alone.
    """
    from paratrain.launch.lifeline import exit_now

    done = threading.Event()

    def watch() -> None:
        seen_workers, idle_since = False, None
        while not done.wait(poll_s):
            if _children():
                seen_workers, idle_since = True, None
                continue
            if not seen_workers:
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since > grace_s:
                print(f"paratrain: error: torchrun's agent has had no workers for {grace_s:.0f} s and has not ended "
                      "(blocked on the rendezvous store across a lost link?); ending it", file=sys.stderr)
                exit_now(1)

    threading.Thread(target=watch, name="stuck-agent-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def _children() -> list[int]:
    """Live child processes of this process (Linux /proc; none elsewhere, which disables the watch).

    A worker that exited stays a zombie until the agent reaps it, which a stuck agent does not:
    zombies do not count."""
    pids: list[int] = []
    for task in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(pid) for pid in task.read_text().split()]
        except OSError:
            continue
    return [pid for pid in pids if _state(pid) not in ("Z", "X", None)]


def _state(pid: int) -> str | None:
    """The process's state letter from /proc/PID/stat (after the parenthesised name), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ is ``env`` while the block runs (torchrun's agent and its workers read it)."""
    before = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def _run_agent(argv: list[str], master: str, timeout_s: float) -> int:
    """torchrun's main on ``argv``; its failures as exit statuses and paratrain errors."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import (RendezvousConnectionError, RendezvousError,
                                                          RendezvousTimeoutError)

    from paratrain.train.interrupts import Interrupted

    try:
        torchrun.main(argv)
    except ChildFailedError:
        return 1  # torchrun has printed which rank failed, and how
    except SignalException as exc:
        # The agent has stopped its workers; end like any interrupted paratrain command (130/143).
        raise Interrupted(int(exc.sigval)) from None
    except RendezvousConnectionError:
        raise LaunchError(f"--master {master}: node 0's rendezvous store did not answer within --rdzv-timeout "
                          f"{timeout_s:g} s; start node 0 (paratrain launch --node-rank 0 ...) and check that "
                          "this machine reaches that address and port") from None
    except RendezvousTimeoutError as exc:
        raise LaunchError(f"the rendezvous at --master {master} did not complete within --rdzv-timeout "
                          f"{timeout_s:g} s: {exc}; start every node, or allow more time") from None
    except RendezvousError as exc:
        raise LaunchError(f"the rendezvous at --master {master} failed: {exc}") from None
    except SystemExit as exc:  # torchrun's own argument parser
        return exc.code if isinstance(exc.code, int) else 1
    return 0
