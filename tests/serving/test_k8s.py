"""The Kubernetes manifests parse, match `kgserver serve`'s options and keep secrets out."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
import yaml

from kgserver.cli.app import app

K8S = Path(__file__).resolve().parents[2] / "k8s"


def documents() -> dict[str, dict]:
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def serve_options() -> set[str]:
    command = typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]
    return {name for parameter in command.params for name in parameter.opts}


def test_the_deployment_runs_serve_with_real_options_and_grpc_health_probes() -> None:
    manifests = documents()
    assert {"ConfigMap", "Deployment", "Service", "Kustomization"} <= set(manifests)
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["kgserver"] and container["args"][0] == "serve"
    options = {arg.split("=", 1)[0] for arg in container["args"][1:]}
    assert options <= serve_options(), options - serve_options()
    port = container["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port

    config = manifests["ConfigMap"]["data"]
    for variable in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
        assert variable in config, f"{variable} is not set by the ConfigMap"
    grace = float(config["KGSERVER_GRACE_SECONDS"])
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > grace + pause

    service = manifests["Service"]["spec"]
    assert service["selector"].items() <= pod_labels(manifests).items()
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]


def pod_labels(manifests: dict[str, dict]) -> dict[str, str]:
    return manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]


def test_no_secret_is_inlined() -> None:
    manifests = documents()
    assert "Secret" not in manifests
    [container] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    for variable in container["env"]:
        if re.search(r"TOKEN|PASSWORD|SECRET|DATABASE_URL", variable["name"]):
            assert "secretKeyRef" in variable.get("valueFrom", {}), variable["name"]
    for key, value in manifests["ConfigMap"]["data"].items():
        assert not re.search(r"TOKEN|PASSWORD|SECRET", key)
        assert not re.search(r"//[^/@]+:[^/@]+@", value), f"{key} holds credentials"
