"""Render the kustomize overlays with kubectl and look into the result.

Every test of the deployment works on what `kubectl kustomize` renders, i.e. what
`kubectl apply -k` would send, never on the source files alone. When kubectl is missing,
or too old to know the kustomize features the overlays use, the tests fail and say so.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = K8S / "overlays"
# The oldest Kubernetes the manifests promise to work with, and the schemas they are
# validated against (kubernetes-validate ships them; strict: unknown fields are errors).
KUBERNETES_VERSION = "1.32"
# Where the Dockerfile puts the source tree in the image (WORKDIR of its build stage).
IMAGE_ROOT = "/opt/kgserver"

Manifest = dict[str, Any]


@functools.cache
def kubectl() -> str:
    """The kubectl to render with: the venv's own (the test extra), else the one on PATH.

    Its built-in kustomize must be v5 or newer (components, `labels`); an older or missing
    kubectl fails the test with the reason instead of with kustomize's confusion.
    """
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl is not installed: the deployment tests render the overlays with `kubectl "
            "kustomize` (the test extras install it into the venv: make install)",
            pytrace=False,
        )
    result = subprocess.run(
        [found, "version", "--client", "-o", "json"], check=False, capture_output=True, text=True, timeout=60
    )
    version = json.loads(result.stdout or "{}").get("kustomizeVersion", "")
    major = re.match(r"v(\d+)\.", version)
    if result.returncode != 0 or major is None or int(major.group(1)) < 5:
        pytest.fail(f"{found} has kustomize {version or 'unknown'}; the overlays need v5 or newer", pytrace=False)
    return found


def overlay_dirs() -> list[Path]:
    """Every kustomization under k8s/overlays: the platforms and their Job overlays."""
    return sorted(path.parent for path in OVERLAYS.rglob("kustomization.yaml"))


def environments() -> list[str]:
    """dev, prod: the overlays that a user applies as a whole platform."""
    return sorted(path.name for path in OVERLAYS.iterdir() if (path / "kustomization.yaml").exists())


def render_dir(directory: Path) -> list[Manifest]:
    """`kubectl kustomize DIRECTORY`, parsed; a rendering error fails with kubectl's message."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], check=False, capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}", pytrace=False)
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@functools.cache
def _render_cached(directory: Path) -> tuple[Manifest, ...]:
    return tuple(render_dir(directory))


def render(directory: Path) -> list[Manifest]:
    """Rendered once per test session (callers must not mutate the result)."""
    return list(_render_cached(directory))


def environment(name: str) -> list[Manifest]:
    """Everything one environment creates: its platform overlay and its Job overlays."""
    return [manifest for directory in overlay_dirs() if _in_environment(directory, name)
            for manifest in render(directory)]


def _in_environment(directory: Path, name: str) -> bool:
    return directory.relative_to(OVERLAYS).parts[0] == name


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def find_generated(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    """A ConfigMap or Secret by its name before kustomize's hash suffix."""
    matches = [
        m for m in manifests
        if m["kind"] == kind and re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", m["metadata"]["name"])
    ]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_templates(manifest: Manifest) -> Iterator[tuple[str, Manifest]]:
    """(where, pod template) of a workload: Deployment, StatefulSet, Job, PyTorchJob."""
    spec = manifest.get("spec", {})
    if "template" in spec:
        yield manifest["metadata"]["name"], spec["template"]
    for replica, replica_spec in spec.get("pytorchReplicaSpecs", {}).items():
        yield f"{manifest['metadata']['name']}/{replica}", replica_spec["template"]


def containers(pod: Manifest) -> list[Manifest]:
    return list(pod["spec"].get("initContainers", [])) + list(pod["spec"]["containers"])


def load_file(path: Path) -> list[Manifest]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def schema_errors(manifests: list[Manifest]) -> list[str]:
    """Every object against the Kubernetes schemas (strict), as `Kind/name: path: message`."""
    errors = []
    for manifest in manifests:
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            errors.append(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{where}: {error.message}")
    return errors
