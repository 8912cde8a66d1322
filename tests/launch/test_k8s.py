"""`paratrain launch --emit k8s`: the PyTorchJob manifest loads into the Kubeflow training SDK's
models without losing a field, satisfies the PyTorchJob CRD's schema (tests/launch/data) and
the operator's own rules, and its command is one that torchrun accepts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from paratrain.errors import ConfigError
from paratrain.launch.emitted import NodeResources
from paratrain.launch.k8s import PyTorchJobOptions, pytorchjob_manifest
from paratrain.launch.launch_config import LaunchConfig
from tests.conftest import run_cli

SCHEMA = json.loads((Path(__file__).parent / "data" / "pytorchjob_crd_v1_schema.json").read_text())
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int, "number": (int, float)}


def schema_errors(schema: dict, value, path: str = "") -> list[str]:
    """Where VALUE breaks SCHEMA (the structural OpenAPI v3 subset CRDs use), as the API server would see it."""
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) and not isinstance(value, bool) else [f"{path}: int or string"]
    kind = schema.get("type")
    if kind and (not isinstance(value, TYPES[kind]) or (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{path}: {type(value).__name__} where the CRD has {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} not in {schema['enum']}"]
    errors = []
    if isinstance(value, dict):
        errors += [f"{path}.{name}: required" for name in schema.get("required", []) if name not in value]
        properties, extra = schema.get("properties"), schema.get("additionalProperties")
        for key, item in value.items():
            if properties is not None and key in properties:
                errors += schema_errors(properties[key], item, f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(extra, item, f"{path}.{key}")
            elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{key}: unknown field (the API server would drop it)")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            errors += schema_errors(schema["items"], item, f"{path}[{index}]")
    return errors


def test_manifest_survives_the_sdk_models_the_crd_and_torchrun(tmp_path):
    from kubeflow.training.api_client import ApiClient
    from kubeflow.training.utils.utils import FakeResponse
    from torch.distributed.run import get_args_parser

    fit = ["fit", "--data", "/runs/data.csv", "--target", "y", "--strategy", "ddp", "--out", "/runs/a"]
    out = tmp_path / "job.yaml"
    done = run_cli("launch", "--emit", "k8s", "--nnodes", "3", "--nproc-per-node", "2", "--cpus-per-node", "4",
                   "--memory", "8G", "--gpus-per-node", "1", "--time-limit", "01:30:00", "--max-restarts", "2",
                   "--image", "registry.example.com/paratrain:0.8", "--volume-claim", "paratrain-runs",
                   "--job-name", "fit-a", "--output", str(out), "--", *fit)
    assert done.returncode == 0, done.stderr
    manifest = yaml.safe_load(out.read_text())

    # The SDK's models keep every field: a misspelt or misplaced one would not come back.
    client = ApiClient()
    job = client.deserialize(FakeResponse(manifest), "KubeflowOrgV1PyTorchJob")
    assert client.sanitize_for_serialization(job) == manifest
    master, worker = job.spec.pytorch_replica_specs["Master"], job.spec.pytorch_replica_specs["Worker"]
    assert (job.api_version, job.kind, job.metadata.name) == ("kubeflow.org/v1", "PyTorchJob", "fit-a")
    assert (master.replicas, worker.replicas, master.restart_policy) == (1, 2, "OnFailure")
    assert job.spec.nproc_per_node == "2" and job.spec.run_policy.active_deadline_seconds == 5400

    # The CRD's schema, and the operator's own rules (its admission webhook).
    assert schema_errors(SCHEMA, manifest) == []
    for role, spec in manifest["spec"]["pytorchReplicaSpecs"].items():
        container, = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"]
        assert {"name": "pytorchjob-port", "containerPort": 29400} in container["ports"]
        assert {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"} in container["env"]
        assert {"name": "OMP_NUM_THREADS", "value": "2"} in container["env"]
        assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"},
                                          "limits": {"memory": "8Gi", "nvidia.com/gpu": "1"}}
        assert container["volumeMounts"] == [{"name": "runs", "mountPath": "/runs"}]
        assert spec["template"]["spec"]["volumes"] == [
            {"name": "runs", "persistentVolumeClaim": {"claimName": "paratrain-runs"}}]
        # The command is a torchrun invocation that torchrun's own parser reads as meant.
        assert container["command"][:3] == ["python", "-m", "torch.distributed.run"]
        args = get_args_parser().parse_args(container["command"][3:])
        assert (args.nnodes, args.nproc_per_node, args.rdzv_backend, args.max_restarts) == ("3", "2", "c10d", 2)
        assert args.rdzv_endpoint == "$(MASTER_ADDR):$(MASTER_PORT)" and args.rdzv_id == "fit-a"
        assert args.rdzv_conf.startswith(f"is_host={'true' if role == 'Master' else 'false'},")
        assert args.module and args.training_script == "paratrain" and args.training_script_args == fit

    # One node: a Master only, still valid.
    one = pytorchjob_manifest(
        LaunchConfig(nnodes="1", node_rank=None, master="$MASTER:29400", command=("fit", "--demo")),
        PyTorchJobOptions(job_name="one", image="paratrain:1", volume_claim="runs", resources=NodeResources(cpus=1)))
    assert list(one["spec"]["pytorchReplicaSpecs"]) == ["Master"] and schema_errors(SCHEMA, one) == []
    assert schema_errors(SCHEMA, {**one, "spec": {**one["spec"], "nprocPerNodes": "1"}}) == [
        ".spec.nprocPerNodes: unknown field (the API server would drop it)"]


def test_manifest_refuses_what_a_cluster_would_not_run():
    config = LaunchConfig(nnodes="2", node_rank=None, master="$MASTER:29400", command=("fit", "--out", "/tmp/a"))
    resources = NodeResources(cpus=1)
    with pytest.raises(ConfigError, match="--out /tmp/a is not on the shared volume mounted at /runs"):
        pytorchjob_manifest(config, PyTorchJobOptions(job_name="a", image="i", volume_claim="c", resources=resources))
    with pytest.raises(ConfigError, match="--job-name 'Fit_A' must be a DNS-1035 label"):
        PyTorchJobOptions(job_name="Fit_A", image="i", volume_claim="c", resources=resources)
    with pytest.raises(ConfigError, match="--memory '8GB' must be a number"):
        NodeResources(cpus=1, memory="8GB")
    done = run_cli("launch", "--emit", "k8s", "--volume-claim", "c", "--", "fit", "--demo")
    assert done.returncode != 0 and "--image is required with --emit k8s" in done.stderr
