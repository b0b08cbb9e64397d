"""Every container command in the manifests is accepted by the real CLI it runs.

`kgserver ...` is parsed by the click command behind kgserver's typer app, `mlflow server`
by MLflow's click group, `torchrun` by torch's own argument parser: unknown options,
missing required ones and values of the wrong type all fail here instead of in a pod.
`$(VAR)` references are expanded first, from the container's env and ConfigMaps, as the
kubelet would; a reference nothing defines is itself a failure.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
from mlflow.cli import cli as mlflow_cli
from torch.distributed.run import get_args_parser

from kgserver.cli import app

from .rendering import (
    IMAGE_ROOT,
    K8S,
    REPO,
    Manifest,
    containers,
    environment,
    environments,
    find_generated,
    load_file,
    pod_templates,
)

# The kgserver console script in the image (the Dockerfile's venv), as torchrun runs it.
IMAGE_KGSERVER = f"{IMAGE_ROOT}/.venv/bin/kgserver"
SECRET_PLACEHOLDER = "from-a-secret"


def parse(group: Any, argv: list[str], prog: str) -> None:
    """Resolve subcommands down to a leaf command and parse its options, as click would.

    Duck-typed: typer vendors its own copy of click, so kgserver's commands and errors are
    not the `click` package's classes that MLflow's are.
    """
    command, words = group, list(argv)
    while hasattr(command, "commands"):
        assert words, f"`{prog}` names no subcommand"
        name = words.pop(0)
        assert name in command.commands, f"`{prog}` has no subcommand {name!r}"
        command, prog = command.commands[name], f"{prog} {name}"
    try:
        command.make_context(prog, list(words))  # click consumes the list it parses
    except Exception as error:
        if not hasattr(error, "format_message"):  # not a usage error: a bug of the test
            raise
        pytest.fail(f"`{prog} {' '.join(words)}` is rejected: {error.format_message()}", pytrace=False)


def kgserver_command() -> Any:
    return typer.main.get_command(app)


def env_values(container: Manifest, manifests: list[Manifest]) -> dict[str, str]:
    """The container's environment as the kubelet builds it (Secrets as a placeholder)."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            config = configmap(manifests, source["configMapRef"]["name"])
            values.update(config["data"])
        else:
            assert "secretRef" in source, source
    for variable in container.get("env", []):
        if "value" in variable:
            values[variable["name"]] = expand(variable["value"], values)
        elif "configMapKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["configMapKeyRef"]
            data = configmap(manifests, ref["name"])["data"]
            assert ref["key"] in data, f"ConfigMap {ref['name']} has no key {ref['key']}"
            values[variable["name"]] = data[ref["key"]]
        else:
            assert "secretKeyRef" in variable["valueFrom"], variable
            values[variable["name"]] = SECRET_PLACEHOLDER
    return values


def configmap(manifests: list[Manifest], name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == "ConfigMap" and m["metadata"]["name"] == name]
    if not found:  # referenced by its generator name from another kustomization
        found = [find_generated(manifests, "ConfigMap", name)]
    return found[0]


def expand(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in values, f"$({name}) is defined by neither env nor a ConfigMap"
        return values[name]

    return re.sub(r"\$\((\w+)\)", value, text)


def check_command(container: Manifest, manifests: list[Manifest], where: str) -> str:
    """Parse the container's command line with its real CLI; returns the program run."""
    argv = [expand(word, env_values(container, manifests))
            for word in container.get("command", []) + container.get("args", [])]
    assert argv, f"{where}: {container['name']} runs its image's default command"
    program, arguments = argv[0], argv[1:]
    if program == "kgserver":
        parse(kgserver_command(), arguments, "kgserver")
    elif program == "mlflow":
        parse(mlflow_cli, arguments, "mlflow")
    elif program == "torchrun":
        try:
            options = get_args_parser().parse_args(arguments)
        except SystemExit:
            pytest.fail(f"{where}: torchrun rejects {arguments}", pytrace=False)
        assert options.training_script == IMAGE_KGSERVER and not options.module, options
        parse(kgserver_command(), options.training_script_args, "kgserver")
    else:
        pytest.fail(f"{where}: no CLI check for {program!r}; add one", pytrace=False)
    for word in arguments:
        if word.startswith(IMAGE_ROOT + "/") and word != IMAGE_KGSERVER:
            assert (REPO / word.removeprefix(IMAGE_ROOT + "/")).exists(), f"{where}: {word} is not in the image"
    return program


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_every_container_command_parses_with_the_real_cli(name: str) -> None:
    assert environments() == ["dev", "prod"]
    manifests = environment(name)
    programs = {}
    for manifest in manifests:
        for where, pod in pod_templates(manifest):
            for container in containers(pod):
                if container["image"].startswith("postgres:"):
                    assert "command" not in container and "args" not in container
                    continue
                programs[(where, container["name"])] = check_command(container, manifests, where)
    assert programs == {
        ("kgserver", "kgserver"): "kgserver",
        ("mlflow", "mlflow"): "mlflow",
        ("kgserver-import", "db-upgrade"): "kgserver",
        ("kgserver-import", "import"): "kgserver",
        ("kgserver-train", "train"): "kgserver",
    }


def test_the_optional_pytorchjob_runs_torchrun_on_kgserver_train() -> None:
    manifests = load_file(K8S / "optional" / "pytorchjob.yaml")
    platform = environment("prod")
    [job] = [m for m in manifests if m["kind"] == "PyTorchJob"]
    checked = [check_command(container, platform, where)
               for where, pod in pod_templates(job) for container in containers(pod)]
    assert checked == ["torchrun", "torchrun"]


def test_a_wrong_option_is_caught() -> None:
    """The checks above are not vacuous: a misspelt or mistyped option fails."""
    manifests = environment("prod")
    container = {"name": "x", "command": ["kgserver"], "args": ["serve", "--model=m@a", "--max-kay=3"]}
    with pytest.raises(pytest.fail.Exception, match="No such option: --max-kay"):
        check_command(container, manifests, "test")
    container["args"] = ["serve", "--model=m@a", "--port=grpc"]
    with pytest.raises(pytest.fail.Exception, match="--port"):
        check_command(container, manifests, "test")
    container["args"] = ["train", "--graph=g"]
    with pytest.raises(pytest.fail.Exception, match="--model"):
        check_command(container, manifests, "test")
    container = {"name": "x", "command": ["torchrun"], "args": ["--nprocs=2", IMAGE_KGSERVER, "train"]}
    with pytest.raises(pytest.fail.Exception, match="torchrun rejects"):
        check_command(container, manifests, "test")
    container = {"name": "x", "command": ["mlflow"], "args": ["server", "--artifact-destination=/x"]}
    with pytest.raises(pytest.fail.Exception, match="No such option"):
        check_command(container, manifests, "test")
    container = {"name": "x", "command": ["kgserver"], "args": ["serve", "--model=$(NOT_DEFINED)"]}
    with pytest.raises(AssertionError, match="NOT_DEFINED"):
        check_command(container, manifests, "test")


def test_the_serving_args_come_from_the_configmap_and_serve_the_alias_training_registers() -> None:
    for name in ("dev", "prod"):
        manifests = environment(name)
        config = configmap(manifests, "kgserver")["data"]
        train = configmap(manifests, "kgserver-train")["data"]
        registered, alias = config["KGSERVER_MODEL"].split("@")
        assert registered == train["TRAIN_REGISTER_AS"]
        assert alias == "champion"  # `kgserver models promote`'s default alias, as in k8s/README.md
        assert Path(REPO / "examples" / "codex-s").is_dir()


def readme_kgserver_commands() -> list[list[str]]:
    """The `kgserver ...` command lines of k8s/README.md's shell blocks, as argv lists."""
    text = (K8S / "README.md").read_text()
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line.split(" #")[0])
            if words[:1] == ["kubectl"] and "--" in words:  # kubectl exec POD -- kgserver ...
                words = words[words.index("--") + 1:]
            if words[:1] == ["kgserver"]:
                found.append([word for word in words[1:] if word != "&"])
    return found


def test_the_readme_walkthrough_uses_real_kgserver_options() -> None:
    commands = readme_kgserver_commands()
    assert [argv[:2] for argv in commands] == [
        ["models", "promote"], ["query", "health"], ["query", "tails"]]
    for argv in commands:
        parse(kgserver_command(), argv, "kgserver")


def exec_commands(manifests: list[Manifest]) -> list[tuple[str, list[str]]]:
    """(where, command) of every exec probe and preStop hook."""
    found = []
    for manifest in manifests:
        for where, pod in pod_templates(manifest):
            for container in containers(pod):
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "exec" in container.get(probe, {}):
                        found.append((f"{where} {probe}", container[probe]["exec"]["command"]))
                pre_stop = container.get("lifecycle", {}).get("preStop", {})
                if "exec" in pre_stop:
                    found.append((f"{where} preStop", pre_stop["exec"]["command"]))
    return found


def check_exec(where: str, command: list[str]) -> None:
    program, *arguments = command
    if program == "sleep":
        assert len(arguments) == 1 and arguments[0].isdigit(), where
    elif program == "pg_isready":
        # The real client (PostgreSQL's), pointed at a closed port: 3 means it rejected the options.
        if shutil.which("pg_isready") is None:
            pytest.fail("pg_isready is not installed (Debian's postgresql-client)", pytrace=False)
        result = subprocess.run(
            ["pg_isready", *arguments, "--host=127.0.0.1", "--port=1", "--timeout=1"],
            check=False, capture_output=True, text=True, timeout=30,
        )
        assert result.returncode != 3, f"{where}: {result.stderr}"
    else:
        pytest.fail(f"{where}: no check for {program!r}; add one", pytrace=False)


def test_exec_probes_and_hooks_use_real_options() -> None:
    for name in ("dev", "prod"):
        commands = exec_commands(environment(name))
        assert {command[0] for _, command in commands} == {"sleep", "pg_isready"}
        for where, command in commands:
            check_exec(where, command)
    with pytest.raises(AssertionError, match="unrecognized option"):
        check_exec("test", ["pg_isready", "--usernme=kgserver"])
