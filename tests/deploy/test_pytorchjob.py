"""The optional PyTorchJob (k8s/optional/) is a valid Kubeflow Training Operator v1 object.

It is kept out of the overlays until `kgserver train` trains data-parallel, and checked
here so it does not rot meanwhile: the Kubeflow fields against the operator's CRD schema
(schemas/pytorchjob-v1.json, with unknown fields refused), the operator's admission rules,
and each replica's pod template against Kubernetes' own PodTemplateSpec schema. Its command
line is checked with the real torchrun and kgserver CLIs in test_commands.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from .rendering import (
    K8S,
    KUBERNETES_VERSION,
    Manifest,
    load_file,
    overlay_dirs,
    render,
)

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "pytorchjob-v1.json").read_text())
PYTORCHJOB = K8S / "optional" / "pytorchjob.yaml"


def pytorchjob() -> Manifest:
    [job] = [m for m in load_file(PYTORCHJOB) if m["kind"] == "PyTorchJob"]
    return job


def operator_errors(job: Manifest) -> list[str]:
    """The CRD schema, then the operator's validating webhook (pytorchjob_webhook.go, v1.9)."""
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(job)]
    if errors:
        return errors
    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", job["metadata"]["name"]):
        errors.append("metadata.name: not a DNS-1035 label")
    replicas = job["spec"]["pytorchReplicaSpecs"]
    if "elasticPolicy" in job["spec"] and "Worker" not in replicas:
        errors.append("pytorchReplicaSpecs.Worker: must be configured if elastic policy is used")
    for kind, spec in replicas.items():
        pod_containers = spec["template"].get("spec", {}).get("containers", [])
        if not any(c.get("name") == "pytorch" for c in pod_containers):
            errors.append(f"pytorchReplicaSpecs.{kind}: no container named pytorch")
        if any(not c.get("image") for c in pod_containers):
            errors.append(f"pytorchReplicaSpecs.{kind}: a container has no image")
        if kind == "Master" and spec.get("replicas") != 1:
            errors.append("pytorchReplicaSpecs.Master.replicas: must be 1")
        if kind == "Worker" and spec.get("replicas", 1) < 1:
            errors.append("pytorchReplicaSpecs.Worker.replicas: must be at least 1")
    return errors


def pod_template_errors(job: Manifest) -> list[str]:
    errors = []
    for kind, spec in job["spec"]["pytorchReplicaSpecs"].items():
        as_object = {"apiVersion": "v1", "kind": "PodTemplate",
                     "metadata": {"name": f"{job['metadata']['name']}-{kind.lower()}"},
                     "template": spec["template"]}
        try:
            kubernetes_validate.validate(as_object, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{kind}: {'.'.join(map(str, error.path))}: {error.message}")
    return errors


def test_the_pytorchjob_is_valid_for_the_operator_and_kubernetes() -> None:
    job = pytorchjob()
    assert operator_errors(job) == []
    assert pod_template_errors(job) == []


def test_the_pytorchjob_runs_a_master_and_workers_with_the_rendezvous_port() -> None:
    job = pytorchjob()
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) == {"Master", "Worker"}
    for spec in replicas.values():
        [container] = spec["template"]["spec"]["containers"]
        assert {"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"} in container["ports"]
        # Each process gets an equal share of the pod's CPU request.
        threads = int(next(a for a in container["args"] if a.startswith("--threads=")).split("=")[1])
        assert threads * int(job["spec"]["nprocPerNode"]) == int(container["resources"]["requests"]["cpu"])


def test_the_pytorchjob_is_not_in_any_overlay() -> None:
    """Not until `kgserver train` trains data-parallel (see the file's header)."""
    for directory in overlay_dirs():
        assert not [m for m in render(directory) if m["kind"] == "PyTorchJob"], directory


BREAKAGES = {
    "a misspelt Kubeflow field": (lambda job: job["spec"].update(nprocsPerNode="2"), "nprocsPerNode"),
    "an unknown replica type": (lambda job: job["spec"]["pytorchReplicaSpecs"].update(
        Chief=job["spec"]["pytorchReplicaSpecs"]["Worker"]), "Chief"),
    "two masters": (lambda job: job["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2), "must be 1"),
    "a bad restart policy": (lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"].update(
        restartPolicy="Sometimes"), "Sometimes"),
    "a renamed container": (lambda job: job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"][
        "containers"][0].update(name="trainer"), "no container named pytorch"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_broken_pytorchjob_is_rejected(breakage: str) -> None:
    change, culprit = BREAKAGES[breakage]
    job = copy.deepcopy(pytorchjob())
    change(job)
    errors = operator_errors(job)
    assert errors and any(culprit in error for error in errors), errors


def test_a_broken_pod_template_is_rejected() -> None:
    job = copy.deepcopy(pytorchjob())
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["resource"] = {}
    assert [e for e in pod_template_errors(job) if e.startswith("Worker: ") and "resource" in e]
