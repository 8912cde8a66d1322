"""The ``launch`` subcommand: start this node's share of a multi-node job under torchrun,
or write what a scheduler needs to start it (``--emit slurm|k8s``).

``paratrain.cli`` calls :func:`add_parser` from ``build_parser``.
"""

from __future__ import annotations

import argparse
from typing import Any

EMIT_CHOICES = ("slurm", "k8s")


def add_parser(subparsers: Any) -> None:
    """Register `launch` on the main parser's subcommands."""
    launch = subparsers.add_parser(
        "launch", help="run a paratrain command on several machines (torchrun), or write a Slurm/Kubernetes job",
        description="Start this node's torchrun agent for a job of --nnodes machines, each running the paratrain "
        "command after --. Node 0 hosts the rendezvous at --master. With --emit slurm or --emit k8s, write an sbatch "
        "script or a Kubeflow PyTorchJob manifest for the same job instead of starting anything.",
        epilog="example (on each of 2 machines): paratrain launch --nnodes 2 --node-rank R --master 10.0.0.1:29400 "
        "--nproc-per-node 2 -- fit --data d.csv --target y --strategy ddp --out /shared/runs/a",
    )
    launch.add_argument("--nnodes", default="1", help="machines in the job: N, or MIN:MAX to go on with fewer (1)")
    launch.add_argument("--node-rank", type=int, help="this machine's rank, 0 to N-1 (0 hosts the rendezvous)")
    launch.add_argument("--master", metavar="HOST:PORT",
                        help="address of node 0's rendezvous, reachable from every node (with --emit: chosen by the "
                        "scheduler; give '$MASTER:PORT' to pick the port, default 29400)")
    launch.add_argument("--nproc-per-node", type=int, default=1, help="worker processes on each machine (1)")
    launch.add_argument("--interface", metavar="IF",
                        help="network interface to bind (default: the one that routes to --master)")
    launch.add_argument("--max-restarts", type=int, default=0,
                        help="restart the group from its last checkpoint this many times after a worker fails (0)")
    launch.add_argument("--run-id", default="paratrain", help="job id, the same on every node (paratrain)")
    launch.add_argument("--rdzv-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long the rendezvous waits for the machines (300)")
    emit = launch.add_argument_group("schedulers")
    emit.add_argument("--emit", choices=EMIT_CHOICES, help="write an sbatch script (slurm) or a PyTorchJob manifest "
                      "(k8s) to --output instead of starting the job")
    emit.add_argument("--output", metavar="FILE", help="where --emit writes (default: standard output)")
    emit.add_argument("--submit", action="store_true", help="with --emit slurm: also submit the script with sbatch")
    emit.add_argument("--partition", help="Slurm partition (the cluster's default)")
    emit.add_argument("--time-limit", metavar="HH:MM:SS", help="Slurm time limit / Kubernetes activeDeadlineSeconds")
    emit.add_argument("--cpus-per-node", type=int, help="CPU cores to ask for on each machine (default: the workers' count)")
    emit.add_argument("--memory", metavar="SIZE", help="memory to ask for on each machine, e.g. 16G")
    emit.add_argument("--gpus-per-node", type=int, default=0, help="GPUs to ask for on each machine (0)")
    emit.add_argument("--image", help="k8s: container image that has paratrain installed")
    emit.add_argument("--volume-claim", metavar="PVC", help="k8s: PersistentVolumeClaim mounted for the run directory")
    emit.add_argument("--mount-path", default="/runs", help="k8s: where the claim is mounted (/runs)")
    emit.add_argument("--job-name", help="Slurm job / PyTorchJob name (default: --run-id)")
    launch.add_argument("worker_command", nargs=argparse.REMAINDER,
                        help="-- then the paratrain command each worker runs (fit ..., curvefit ..., tune-worker ...)")
    launch.set_defaults(handler=run_launch)


def launch_config(args: argparse.Namespace):
    """The LaunchConfig that the flags describe (errors name the flag)."""
    from paratrain.errors import ConfigError
    from paratrain.launch.emitted import DEFAULT_RDZV_PORT, SCHEDULED_MASTER_HOST
    from paratrain.launch.launch_config import LaunchConfig

    command = list(args.worker_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if args.emit and args.node_rank is not None:
        raise ConfigError(f"--node-rank {args.node_rank} does not go with --emit {args.emit}: the scheduler numbers "
                          "the nodes; leave --node-rank out")
    node_rank = args.node_rank if args.node_rank is not None else (None if args.emit else 0)
    # With --emit the scheduler places the rendezvous (Slurm: the first node; Kubernetes: the master pod);
    # "$MASTER:PORT" says so and still lets the port be chosen.
    master = args.master or ("" if not args.emit else f"{SCHEDULED_MASTER_HOST}:{DEFAULT_RDZV_PORT}")
    return LaunchConfig(nnodes=args.nnodes, node_rank=node_rank, master=master, command=tuple(command),
                        nproc_per_node=args.nproc_per_node, interface=args.interface,
                        max_restarts=args.max_restarts, run_id=args.run_id, rdzv_timeout_s=args.rdzv_timeout)


def run_launch(args: argparse.Namespace) -> int:
    """Start the torchrun agent of this node, or write (and submit) a scheduler's job."""
    from paratrain.errors import ConfigError

    if not args.emit and not args.master:
        raise ConfigError("--master HOST:PORT is needed to start a node: node 0's address and a free port for "
                          "the rendezvous, the same on every node (e.g. --master 10.0.0.1:29400)")
    config = launch_config(args)
    if not args.emit and args.node_rank is None and config.max_nodes > 1:
        # Defaulting to 0 would make every machine try to host the rendezvous.
        raise ConfigError(f"--node-rank is needed with --nnodes {config.nnodes}: 0 on the machine at --master "
                          "(it hosts the rendezvous), 1, 2, ... on the others")
    if args.emit == "slurm":
        from paratrain.launch.slurm import emit_slurm

        return emit_slurm(config, args)
    if args.emit == "k8s":
        from paratrain.launch.k8s import emit_k8s

        return emit_k8s(config, args)
    from paratrain.launch.torchrun_launch import run_torchrun

    return run_torchrun(config)
