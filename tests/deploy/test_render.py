"""Every overlay renders with `kubectl kustomize` and validates against the Kubernetes schemas.

The schemas are kubernetes-validate's bundled copies (offline), in strict mode: a misspelt
or misplaced field is an error, as it would be for `kubectl apply --validate=strict`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .rendering import K8S, overlay_dirs, render, render_dir, schema_errors


def test_the_overlays_are_the_expected_ones() -> None:
    names = [str(path.relative_to(K8S)) for path in overlay_dirs()]
    assert names == [
        "overlays/dev",
        "overlays/dev/import",
        "overlays/dev/train",
        "overlays/prod",
        "overlays/prod/import",
        "overlays/prod/train",
    ]


@pytest.mark.parametrize("overlay", overlay_dirs(), ids=lambda path: str(path.relative_to(K8S)))
def test_overlay_renders_and_validates_against_the_kubernetes_schemas(overlay: Path) -> None:
    manifests = render(overlay)
    assert manifests, f"{overlay} renders nothing"
    assert schema_errors(manifests) == []


def test_the_platform_has_every_part(  # the parts G2 asks for, by kind
) -> None:
    for environment in ("dev", "prod"):
        kinds = {(m["kind"], m["metadata"]["name"]) for m in render(K8S / "overlays" / environment)}
        assert {
            ("StatefulSet", "postgres"),
            ("Deployment", "mlflow"),
            ("Deployment", "kgserver"),
            ("Service", "kgserver"),
            ("Service", "kgserver-headless"),
            ("HorizontalPodAutoscaler", "kgserver"),
            ("PodDisruptionBudget", "kgserver"),
            ("NetworkPolicy", "kgserver-serving"),
            ("PersistentVolumeClaim", "mlflow-artifacts"),
        } <= kinds, environment
        jobs = [
            m["metadata"]["name"]
            for part in ("import", "train")
            for m in render(K8S / "overlays" / environment / part)
            if m["kind"] == "Job"
        ]
        assert jobs == ["kgserver-import", "kgserver-train"]


BREAKAGES = {
    "a field of the wrong type": ("containerPort: 50051", "containerPort: grpc-port", "containerPort"),
    "a misspelt field": ("imagePullPolicy: IfNotPresent", "imagePulPolicy: IfNotPresent", "imagePulPolicy"),
    "a field in the wrong place": (
        "      terminationGracePeriodSeconds: 30",
        "      terminationGracePeriod: 30",
        "terminationGracePeriod",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_validation_rejects_a_broken_manifest(tmp_path: Path, breakage: str) -> None:
    """A copy of k8s/ with one fault in the serving Deployment fails validation, naming it."""
    old, new, culprit = BREAKAGES[breakage]
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    serving = copy / "base" / "serving.yaml"
    text = serving.read_text()
    assert text.count(old) == 1
    serving.write_text(text.replace(old, new))

    errors = schema_errors(render_dir(copy / "overlays" / "prod"))

    assert len(errors) == 1 and errors[0].startswith("Deployment/kgserver: ") and culprit in errors[0], errors


def test_rendering_fails_on_a_broken_kustomization(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "autoscaling.yaml").unlink()
    with pytest.raises(pytest.fail.Exception, match="autoscaling.yaml"):
        render_dir(copy / "overlays" / "dev")
