"""What the rendered platform means: probes, wiring between objects, secrets, network flows."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from .rendering import (
    K8S,
    Manifest,
    containers,
    environment,
    environments,
    find,
    find_generated,
    pod_templates,
    render,
    render_dir,
    schema_errors,
)

ENVIRONMENTS = ["dev", "prod"]
# The Secrets a user creates for prod (k8s/README.md), by name and key; dev generates them.
USER_SECRETS = {
    ("postgres", "password"),
    ("kgserver-database", "store-url"),
    ("kgserver-database", "mlflow-url"),
    ("kgserver-auth", "token"),
}


def platform(name: str) -> list[Manifest]:
    return render(K8S / "overlays" / name)


def serving_pod(manifests: list[Manifest]) -> Manifest:
    return find(manifests, "Deployment", "kgserver")["spec"]["template"]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions with In) against a pod's labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", expression
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_the_deployment_runs_serve_with_grpc_health_probes_and_a_long_enough_grace(name: str) -> None:
    manifests = platform(name)
    pod = serving_pod(manifests)["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["kgserver"] and container["args"][0] == "serve"
    port = container["ports"][0]["containerPort"]
    assert f"--port={port}" in container["args"] and "--host=0.0.0.0" in container["args"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port

    config = find(manifests, "ConfigMap", "kgserver")["data"]
    grace = float(config["KGSERVER_GRACE_SECONDS"])
    pause = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > grace + pause
    assert "replicas" not in find(manifests, "Deployment", "kgserver")["spec"], "the HPA owns replicas"

    # The token file serve reads is the kgserver-auth Secret's key, mounted read-only.
    token_file = next(a for a in container["args"] if a.startswith("--auth-token-file=")).split("=", 1)[1]
    [volume] = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == "kgserver-auth"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    assert token_file in {f"{mount['mountPath']}/{item['path']}" for item in volume["secret"]["items"]}


def test_serve_runs_one_worker_process_per_requested_cpu_with_one_tensor_thread_each() -> None:
    # prod: dev requests half a core (a laptop) and still runs the base's workers, which only share it.
    manifests = platform("prod")
    [container] = serving_pod(manifests)["spec"]["containers"]
    workers = int(next(a for a in container["args"] if a.startswith("--workers=")).split("=", 1)[1])
    assert workers == int(container["resources"]["requests"]["cpu"])
    assert "--torch-threads=$(KGSERVER_TORCH_THREADS)" in container["args"]
    assert find(manifests, "ConfigMap", "kgserver")["data"]["KGSERVER_TORCH_THREADS"] == "1"


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_services_autoscaler_and_budget_point_at_the_right_pods(name: str) -> None:
    manifests = platform(name)
    workloads = {(m["kind"], m["metadata"]["name"]): m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")}
    for service in (m for m in manifests if m["kind"] == "Service"):
        selected = [
            w
            for w in workloads.values()
            if matches({"matchLabels": service["spec"]["selector"]}, w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(selected) == 1, service["metadata"]["name"]
        [workload_container] = selected[0]["spec"]["template"]["spec"]["containers"]
        port_names = {port["name"] for port in workload_container["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    assert find(manifests, "Service", "kgserver-headless")["spec"]["clusterIP"] == "None"
    assert find(manifests, "Service", "kgserver")["spec"]["type"] == "ClusterIP"
    assert find(manifests, "StatefulSet", "postgres")["spec"]["serviceName"] == "postgres"

    target = find(manifests, "HorizontalPodAutoscaler", "kgserver")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) in workloads
    hpa = find(manifests, "HorizontalPodAutoscaler", "kgserver")["spec"]
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # CPU utilization is relative to the request: without one the HPA cannot scale.
    [container] = serving_pod(manifests)["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"]
    budget = find(manifests, "PodDisruptionBudget", "kgserver")["spec"]
    assert matches(budget["selector"], serving_pod(manifests)["metadata"]["labels"])


def secret_references(manifests: list[Manifest]) -> set[tuple[str, str, bool]]:
    """(Secret name, key, optional) of every secret a pod reads: env, envFrom, volumes."""
    found = set()
    for manifest in manifests:
        for _, pod in pod_templates(manifest):
            for container in containers(pod):
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        found.add((ref["name"], ref["key"], ref.get("optional", False)))
                for source in container.get("envFrom", []):
                    assert "secretRef" not in source, "name the keys a pod reads (secretKeyRef)"
            for volume in pod["spec"].get("volumes", []):
                if "secret" in volume:
                    assert "items" in volume["secret"], "name the keys a pod reads (items)"
                    for item in volume["secret"]["items"]:
                        found.add(
                            (volume["secret"]["secretName"], item["key"], volume["secret"].get("optional", False))
                        )
    return found


def test_secrets_are_only_referenced_and_dev_generates_obvious_placeholders() -> None:
    for name in ENVIRONMENTS:
        manifests = environment(name)
        required = {(secret, key) for secret, key, optional in secret_references(manifests) if not optional}
        assert required == USER_SECRETS, name
        for manifest in manifests:
            for _, pod in pod_templates(manifest):
                for container in containers(pod):
                    for variable in container.get("env", []):
                        if re.search(r"TOKEN|PASSWORD|SECRET|DATABASE_URL|STORE_URI", variable["name"]):
                            assert "secretKeyRef" in variable.get("valueFrom", {}), variable["name"]
            if manifest["kind"] == "ConfigMap":
                for key, value in manifest["data"].items():
                    assert not re.search(r"TOKEN|PASSWORD|SECRET", key)
                    assert not re.search(r"//[^/@]+:[^/@]+@", value), f"{key} holds credentials"

    assert not [m for m in environment("prod") if m["kind"] == "Secret"], "prod defines no Secret"
    dev_secrets = {
        (m["metadata"]["name"], key): base64.b64decode(value).decode()
        for m in environment("dev")
        if m["kind"] == "Secret"
        for key, value in m["data"].items()
    }
    assert set(dev_secrets) == USER_SECRETS
    assert all("dev-only" in value for value in dev_secrets.values()), dev_secrets


def test_the_readme_tells_how_to_create_every_prod_secret() -> None:
    readme = (K8S / "README.md").read_text()
    for secret, key in USER_SECRETS:
        assert re.search(rf"kubectl [^`]*create secret generic {secret}\b[^`]*--from-\w+={key}=", readme), (secret, key)


def test_the_database_password_is_the_same_in_every_dev_secret() -> None:
    dev = environment("dev")
    password = base64.b64decode(find(dev, "Secret", "postgres")["data"]["password"]).decode()
    urls = find(dev, "Secret", "kgserver-database")["data"]
    for key in ("store-url", "mlflow-url"):
        url = base64.b64decode(urls[key]).decode()
        assert url.startswith(f"postgresql+psycopg://kgserver:{password}@postgres:5432/"), key


# --- network policies -------------------------------------------------------------------

# Who must reach whom (the header of k8s/base/networkpolicies.yaml), by workload name.
FLOWS = [
    ("kgserver", "mlflow", 5000),
    ("kgserver", "postgres", 5432),
    ("kgserver-train", "mlflow", 5000),
    ("kgserver-train", "postgres", 5432),
    ("kgserver-import", "postgres", 5432),
    ("mlflow", "postgres", 5432),
]
# And who must not (the database is reached only from kgserver's pods, on its own port).
NO_FLOWS = [("kgserver-import", "mlflow", 5000), ("kgserver", "postgres", 22), ("postgres", "mlflow", 5000)]


def pod_labels(manifests: list[Manifest]) -> dict[str, dict[str, str]]:
    return {where: pod["metadata"]["labels"] for m in manifests for where, pod in pod_templates(m)}


def allowed(policies: list[Manifest], source: dict[str, str], target: dict[str, str], port: int) -> bool:
    """Whether the policies let pod `source` open a TCP connection to pod `target` on `port`.

    Both ends must agree: the source's egress (if a policy selects it for Egress) and the
    target's ingress (likewise). Peers are podSelectors of the same namespace.
    """

    def admits(rules: list[Manifest], peer_key: str, peer: dict[str, str]) -> bool:
        for rule in rules:
            ports = [p["port"] for p in rule.get("ports", [])]
            peers = rule.get(peer_key)
            if ports and port not in ports:
                continue
            if peers is None or any(
                "podSelector" in p and "namespaceSelector" not in p and matches(p["podSelector"], peer) for p in peers
            ):
                return True
        return False

    def direction(pod: dict[str, str], kind: str, rules_key: str, peer_key: str, peer: dict[str, str]) -> bool:
        selecting = [p for p in policies if matches(p["spec"]["podSelector"], pod) and kind in p["spec"]["policyTypes"]]
        return not selecting or any(admits(p["spec"].get(rules_key, []), peer_key, peer) for p in selecting)

    return direction(source, "Egress", "egress", "to", target) and direction(
        target, "Ingress", "ingress", "from", source
    )


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_network_policies_allow_exactly_the_needed_flows(name: str) -> None:
    manifests = environment(name)
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    labels = pod_labels(manifests)
    for source, target, port in FLOWS:
        assert allowed(policies, labels[source], labels[target], port), (source, target, port)
    for source, target, port in NO_FLOWS:
        assert not allowed(policies, labels[source], labels[target], port), (source, target, port)
    client = {"app": "anything"}
    assert allowed(policies, client, labels["kgserver"], 50051), "clients reach serving"
    for workload, pod in labels.items():  # every pod of the platform is behind a policy
        assert any(matches(p["spec"]["podSelector"], pod) for p in policies), workload


def test_the_flow_check_sees_a_broken_policy() -> None:
    manifests = environment("prod")
    labels = pod_labels(manifests)
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    postgres_policy = find(manifests, "NetworkPolicy", "postgres")
    broken = {
        **postgres_policy,
        "spec": {
            **postgres_policy["spec"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "kgserverr"}}}],
                    "ports": [{"port": 5432, "protocol": "TCP"}],
                }
            ],
        },
    }
    others = [p for p in policies if p is not postgres_policy]
    assert allowed(policies, labels["mlflow"], labels["postgres"], 5432)
    assert not allowed(others + [broken], labels["mlflow"], labels["postgres"], 5432)


# --- one environment, one namespace and one image ----------------------------------------


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_an_environment_uses_one_namespace_and_one_kgserver_image(name: str) -> None:
    assert environments() == ENVIRONMENTS
    manifests = environment(name)
    [namespace] = [m["metadata"]["name"] for m in manifests if m["kind"] == "Namespace"]
    for manifest in manifests:
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == namespace, manifest["metadata"]["name"]
    images = {c["image"] for m in manifests for _, pod in pod_templates(m) for c in containers(pod)}
    kgserver_images = {image for image in images if not image.startswith("postgres:")}
    assert len(kgserver_images) == 1 and ":" in next(iter(kgserver_images)), images


def test_every_pod_runs_as_the_images_non_root_user_read_only() -> None:
    for name in ENVIRONMENTS:
        for manifest in environment(name):
            for where, pod in pod_templates(manifest):
                security = pod["spec"]["securityContext"]
                assert security["runAsNonRoot"] is True, where
                assert pod["spec"]["automountServiceAccountToken"] is False, where
                expected_user = 999 if where == "postgres" else 10001
                assert security["runAsUser"] == expected_user, where
                for container in containers(pod):
                    assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
                    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                    assert "memory" in container["resources"]["limits"], where


def test_the_generated_init_script_is_mounted_by_its_hashed_name() -> None:
    for name in ENVIRONMENTS:
        manifests = platform(name)
        init = find_generated(manifests, "ConfigMap", "postgres-init")
        volumes = find(manifests, "StatefulSet", "postgres")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "init", "configMap": {"name": init["metadata"]["name"]}} in volumes
        assert "CREATE DATABASE mlflow" in init["data"]["create-databases.sql"]


def test_the_external_database_variant_renders_and_opens_the_way_to_it(tmp_path: Path) -> None:
    """prod with components/external-database instead of components/postgres (README, step 2)."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    kustomization = copy / "overlays" / "prod" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("- ../../components/postgres\n") == 1
    kustomization.write_text(text.replace("components/postgres", "components/external-database"))

    manifests = render_dir(copy / "overlays" / "prod")

    assert schema_errors(manifests) == []
    assert not [m for m in manifests if m["metadata"]["name"].startswith("postgres")]
    policies = [m for m in manifests if m["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in policies} == {
        "kgserver-serving",
        "kgserver-import",
        "kgserver-train",
        "mlflow",
    }
    for policy in policies:
        assert {"to": [{"ipBlock": {"cidr": "192.0.2.0/24"}}], "ports": [{"port": 5432, "protocol": "TCP"}]} in policy[
            "spec"
        ]["egress"], policy["metadata"]["name"]


@pytest.mark.parametrize("name", ENVIRONMENTS)
def test_clients_find_mlflow_and_postgres_where_their_services_are(name: str) -> None:
    from urllib.parse import urlsplit

    from mlflow.server.security_utils import is_allowed_host_header

    manifests = platform(name)
    namespace = find(manifests, "Namespace", "kgserver" if name == "prod" else f"kgserver-{name}")
    tracking = urlsplit(find(manifests, "ConfigMap", "kgserver")["data"]["MLFLOW_TRACKING_URI"])
    service = find(manifests, "Service", tracking.hostname or "")
    assert tracking.port in [port["port"] for port in service["spec"]["ports"]]
    [mlflow] = find(manifests, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    allowed_hosts = next(a for a in mlflow["args"] if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    full_name = f"{tracking.hostname}.{namespace['metadata']['name']}.svc.cluster.local:{tracking.port}"
    for host in (tracking.netloc, full_name, "localhost:5000"):  # in-cluster, qualified, port-forward
        assert is_allowed_host_header(allowed_hosts, host), host
    assert not is_allowed_host_header(allowed_hosts, f"elsewhere.example.com:{tracking.port}")

    if name == "dev":  # the URLs prod users write are checked by the README's commands
        urls = find(manifests, "Secret", "kgserver-database")["data"]
        postgres = find(manifests, "Service", "postgres")["spec"]["ports"][0]["port"]
        for key, database in (("store-url", "kgserver"), ("mlflow-url", "mlflow")):
            url = urlsplit(base64.b64decode(urls[key]).decode())
            assert (url.hostname, url.port, url.path) == ("postgres", postgres, f"/{database}"), key
