"""Trim the PyTorchJob CRD's openAPIV3Schema to what test_k8s.py needs, and write it next to this file.

    python tests/launch/data/trim_pytorchjob_crd.py kubeflow.org_pytorchjobs.yaml

The input is manifests/base/crds/kubeflow.org_pytorchjobs.yaml of kubeflow/training-operator
(see README.md here for the version). Kept: every field on the paths that paratrain's manifests
write, with its type, required list, enum and format; every other field keeps only its name
and type, so a misspelt or unknown field is still caught. Dropped: descriptions and the
subtrees of fields paratrain does not write (probes, affinity, status, ...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from paratrain.launch.emitted import NodeResources
from paratrain.launch.k8s import PyTorchJobOptions, pytorchjob_manifest
from paratrain.launch.launch_config import LaunchConfig

KEEP = ("type", "required", "enum", "format", "anyOf", "x-kubernetes-int-or-string",
        "x-kubernetes-preserve-unknown-fields", "x-kubernetes-map-type", "x-kubernetes-list-type")
STUB = ("type", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields")


def sample_manifests() -> list[dict]:
    """Manifests that together write every field paratrain can write."""
    full = LaunchConfig(nnodes="1:3", node_rank=None, master="$MASTER:29400", interface="eth0", max_restarts=2,
                        command=("fit", "--demo", "--out", "/runs/a"), nproc_per_node=2)
    small = LaunchConfig(nnodes="1", node_rank=None, master="$MASTER:29400", command=("fit", "--demo"))
    options = PyTorchJobOptions(job_name="a", image="paratrain:1", volume_claim="runs",
                                resources=NodeResources(cpus=4, memory="8G", gpus=1, time_limit="01:00:00"))
    return [pytorchjob_manifest(full, options), pytorchjob_manifest(small, options)]


def trim(schema: dict, values: list) -> dict:
    """SCHEMA kept in full along the paths VALUES use, and as name + type elsewhere."""
    out = {key: schema[key] for key in KEEP if key in schema}
    if "properties" in schema:
        out["properties"] = {}
        for name, sub in schema["properties"].items():
            found = [v[name] for v in values if isinstance(v, dict) and name in v]
            out["properties"][name] = trim(sub, found) if found else {k: sub[k] for k in STUB if k in sub}
    if isinstance(schema.get("items"), dict):
        out["items"] = trim(schema["items"], [x for v in values if isinstance(v, list) for x in v])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = trim(schema["additionalProperties"],
                                           [x for v in values if isinstance(v, dict) for x in v.values()])
    return out


def main(crd_path: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = trim(version["schema"]["openAPIV3Schema"], sample_manifests())
    schema = {"$comment": "kubeflow/training-operator v1.9.0 manifests/base/crds/kubeflow.org_pytorchjobs.yaml, "
                          "openAPIV3Schema trimmed by trim_pytorchjob_crd.py (see README.md)", **schema}
    target = Path(__file__).with_name("pytorchjob_crd_v1_schema.json")
    target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
