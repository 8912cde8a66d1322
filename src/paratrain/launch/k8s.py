"""`paratrain launch --emit k8s`: a Kubeflow PyTorchJob manifest (training-operator v1).

The operator starts one pod per node: a Master (replica 0) and nnodes-1 Workers, gives
every pod MASTER_ADDR (the master pod's service, ``<job>-master-0``) and MASTER_PORT (the
container port named ``pytorchjob-port``), and restarts failed pods (restartPolicy
OnFailure). Each pod runs one torchrun agent with explicit c10d flags, as on Slurm: the
master pod hosts the rendezvous store (``is_host=true``), the workers connect to it.

Why not the operator's elasticPolicy: in v1 it runs Worker replicas only and derives the
torchrun flags from PET_* variables; the explicit command keeps one torchrun invocation
for every scheduler, readable in the manifest, and torchrun's ``--nnodes MIN:MAX`` gives
the elastic range on its own.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from paratrain.errors import ConfigError
from paratrain.launch.emitted import (
    SCHEDULED_MASTER_HOST,
    NodeResources,
    write_emitted,
)
from paratrain.launch.launch_config import LaunchConfig, threads_per_worker, torchrun_args

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
CONTAINER_NAME = "pytorch"
"""The operator finds the training container by this name (PyTorchJobDefaultContainerName)."""
PORT_NAME = "pytorchjob-port"
"""The operator sets MASTER_PORT from the master's container port of this name (PyTorchJobDefaultPortName)."""
VOLUME_NAME = "runs"
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class PyTorchJobOptions:
    """What the PyTorchJob asks Kubernetes for, beyond the LaunchConfig.

    Example:
        >>> PyTorchJobOptions(job_name="fit-a", image="reg.example/paratrain:1", volume_claim="runs",
        ...                   resources=NodeResources(cpus=4)).mount_path
        '/runs'
    """

    job_name: str
    """The PyTorchJob's name; its pods are JOB-master-0 and JOB-worker-I (a DNS-1035 label)."""
    image: str
    """Container image with paratrain (and the data, unless it is on the volume) installed."""
    volume_claim: str
    """PersistentVolumeClaim shared by every pod (ReadWriteMany): the run directory lives on it."""
    resources: NodeResources
    """Cores, memory, GPUs and time for each pod."""
    mount_path: str = "/runs"
    """Where the claim is mounted in each pod."""

    def __post_init__(self) -> None:
        if not _DNS_1035.match(self.job_name):
            raise ConfigError(f"--job-name {self.job_name!r} must be a DNS-1035 label for Kubernetes: lowercase "
                              "letters, digits and '-', starting with a letter, at most 63 characters (e.g. fit-a)")
        if not self.image:
            raise ConfigError("--image is required with --emit k8s: the container image that has paratrain "
                              "installed, e.g. --image registry.example.com/paratrain:0.8")
        if not self.volume_claim:
            raise ConfigError("--volume-claim is required with --emit k8s: a ReadWriteMany PersistentVolumeClaim "
                              "that holds the run directory, so every pod sees the checkpoints")
        if not PurePosixPath(self.mount_path).is_absolute():
            raise ConfigError(f"--mount-path {self.mount_path!r} must be an absolute path, e.g. /runs")


def _out_must_be_on_volume(command: tuple[str, ...], mount_path: str) -> None:
    """A run directory outside the shared volume vanishes with its pod, and the workers would not share it."""
    outs = [value for flag, value in zip(command, command[1:]) if flag == "--out"]
    outs += [arg.partition("=")[2] for arg in command if arg.startswith("--out=")]
    for value in outs:
        if not PurePosixPath(value).is_relative_to(mount_path):
            raise ConfigError(f"--out {value} is not on the shared volume mounted at {mount_path}: the pods would "
                              f"each keep their own copy and lose it when they end; use --out {mount_path}/NAME")


def _container(config: LaunchConfig, options: PyTorchJobOptions, is_host: bool) -> dict[str, Any]:
    """The `pytorch` container of one replica type: its torchrun agent, environment, resources, volume."""
    res = options.resources
    # Kubernetes fills in $(VAR) from the container's environment, which the operator sets.
    torchrun = ["python", "-m", "torch.distributed.run",
                *torchrun_args(config, "$(MASTER_ADDR):$(MASTER_PORT)", options.job_name,
                               "true" if is_host else "false")]
    env = [
        # A restarted group needs a fresh store, else gloo's connectFullMesh fails (torchrun --max-restarts).
        {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": str(threads_per_worker(res.cpus, config.nproc_per_node))},
    ]
    if config.interface:
        env.append({"name": "GLOO_SOCKET_IFNAME", "value": config.interface})
    requests: dict[str, str] = {"cpu": str(res.cpus)}
    limits: dict[str, str] = {}
    if res.kubernetes_memory:
        requests["memory"] = limits["memory"] = res.kubernetes_memory
    if res.gpus:
        # Extended resources such as GPUs are asked for in limits (requests, if given, must equal them).
        limits["nvidia.com/gpu"] = str(res.gpus)
    resources: dict[str, Any] = {"requests": requests}
    if limits:
        resources["limits"] = limits
    return {
        "name": CONTAINER_NAME,
        "image": options.image,
        "command": torchrun,
        "env": env,
        "ports": [{"name": PORT_NAME, "containerPort": config.master_port}],
        "resources": resources,
        "volumeMounts": [{"name": VOLUME_NAME, "mountPath": options.mount_path}],
    }


def _replica(config: LaunchConfig, options: PyTorchJobOptions, replicas: int, is_host: bool) -> dict[str, Any]:
    return {
        "replicas": replicas,
        # A pod whose agent failed is restarted in place; torchrun's --max-restarts handles failed workers first.
        "restartPolicy": "OnFailure",
        "template": {"spec": {
            "containers": [_container(config, options, is_host)],
            "volumes": [{"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": options.volume_claim}}],
        }},
    }


def pytorchjob_manifest(config: LaunchConfig, options: PyTorchJobOptions) -> dict[str, Any]:
    """The PyTorchJob for CONFIG: a Master pod that hosts the rendezvous and nnodes-1 Worker pods.

    Example:
        >>> cfg = LaunchConfig(nnodes="2", node_rank=None, master="$MASTER:29400", command=("fit", "--demo"))
        >>> job = pytorchjob_manifest(cfg, PyTorchJobOptions(job_name="demo", image="paratrain:1",
        ...                                                  volume_claim="runs", resources=NodeResources(cpus=2)))
        >>> replicas = job["spec"]["pytorchReplicaSpecs"]
        >>> job["kind"], sorted(replicas), replicas["Worker"]["replicas"]
        ('PyTorchJob', ['Master', 'Worker'], 1)
    """
    if config.master_host != SCHEDULED_MASTER_HOST:
        raise ConfigError(f"--master {config.master}: in a PyTorchJob the rendezvous is the master pod (the operator "
                          "sets MASTER_ADDR); leave --master out, or give '$MASTER:PORT' to choose the port")
    _out_must_be_on_volume(config.command, options.mount_path)
    replica_specs = {"Master": _replica(config, options, 1, is_host=True)}
    if config.max_nodes > 1:
        # Elastic (MIN:MAX): as many workers as the most nodes; the job goes on with MIN.
        replica_specs["Worker"] = _replica(config, options, config.max_nodes - 1, is_host=False)
    run_policy: dict[str, Any] = {
        # Keep finished pods, so that `kubectl logs` still shows them; delete the job to remove them.
        "cleanPodPolicy": "None",
    }
    if options.resources.time_limit_seconds is not None:
        run_policy["activeDeadlineSeconds"] = options.resources.time_limit_seconds
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": options.job_name, "labels": {"app.kubernetes.io/created-by": "paratrain"}},
        "spec": {
            # The operator computes WORLD_SIZE from it (torchrun sets the workers' own).
            "nprocPerNode": str(config.nproc_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replica_specs,
        },
    }


def manifest_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as YAML for `kubectl apply -f`, keys in the order written."""
    import yaml

    header = "# Kubeflow PyTorchJob written by `paratrain launch --emit k8s`. Start it: kubectl apply -f FILE\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, default_flow_style=False, width=120)


def pytorchjob_options(config: LaunchConfig, args: argparse.Namespace) -> PyTorchJobOptions:
    """The PyTorchJobOptions that `paratrain launch --emit k8s` flags describe."""
    resources = NodeResources(cpus=args.cpus_per_node or config.nproc_per_node, memory=args.memory,
                              gpus=args.gpus_per_node or 0, time_limit=args.time_limit)
    return PyTorchJobOptions(job_name=args.job_name or config.run_id, image=args.image or "",
                             volume_claim=args.volume_claim or "", resources=resources, mount_path=args.mount_path)


def emit_k8s(config: LaunchConfig, args: argparse.Namespace) -> int:
    """Write the PyTorchJob manifest to --output or standard output."""
    if args.submit:
        raise ConfigError("--submit goes with --emit slurm; for Kubernetes run `kubectl apply -f FILE`")
    write_emitted(manifest_yaml(pytorchjob_manifest(config, pytorchjob_options(config, args))), args.output)
    return 0
