"""The Dockerfile installs kgserver with `make install` and runs it as a non-root user.

Docker is not needed (nor available) here: the Dockerfile is parsed into instructions and
checked against the Makefile it relies on (`make -n`, which prints the install commands
without running them), the repository, .dockerignore and the manifests that run the image.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from .rendering import IMAGE_ROOT, REPO, containers, environment, pod_templates

INSTRUCTIONS = {
    "FROM",
    "ARG",
    "RUN",
    "WORKDIR",
    "COPY",
    "ADD",
    "ENV",
    "USER",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
    "LABEL",
    "HEALTHCHECK",
    "SHELL",
    "STOPSIGNAL",
    "VOLUME",
    "ONBUILD",
}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, as docker reads them."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise ValueError(f"Dockerfile line {start}: unknown instruction {keyword!r}")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split()), start))
        pending = ""
    if pending:
        raise ValueError("Dockerfile ends inside a continued line")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    found: list[list[Instruction]] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


def make_install_commands() -> list[str]:
    """The shell commands `make install` runs, printed by make without running them."""
    result = subprocess.run(
        ["make", "-n", "-B", "install"], cwd=REPO, check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def copies(stage: list[Instruction]) -> list[tuple[list[str], str, Instruction]]:
    """(sources, destination, instruction) of each COPY of the build context into the stage."""
    found = []
    for instruction in stage:
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            *sources, destination = shlex.split(instruction.arguments)
            found.append((sources, destination, instruction))
    return found


def copied_before(stage: list[Instruction], line: int) -> set[str]:
    """Repository paths the stage has under its WORKDIR before the instruction at `line`."""
    paths = set()
    for sources, destination, instruction in copies(stage):
        if instruction.line < line:
            for source in sources:
                # `COPY a b ./` keeps names; `COPY dir/ dir/` puts dir's content at dir/.
                if destination not in ("./", ".") and destination.rstrip("/") != source.rstrip("/"):
                    raise AssertionError(f"Dockerfile line {instruction.line}: {source} lands elsewhere")
                paths.add(source.rstrip("/"))
    return paths


def covered(path: str, present: set[str]) -> bool:
    """Whether a repository path is among the copied paths or inside a copied directory."""
    return any(path == copied or path.startswith(copied + "/") for copied in present)


def test_the_dockerfile_parses_into_a_build_and_a_runtime_stage(dockerfile: list[Instruction]) -> None:
    build, runtime = stages(dockerfile)
    assert build[0].arguments.endswith("AS build")
    assert [i.arguments for i in runtime if i.keyword == "COPY"] == [f"--from=build {IMAGE_ROOT} {IMAGE_ROOT}"]
    with pytest.raises(ValueError, match="line 2: unknown instruction 'RUNN'"):
        parse_dockerfile("FROM x\nRUNN make install\n")


def test_the_image_installs_with_make_install_and_nothing_else(dockerfile: list[Instruction]) -> None:
    build, runtime = stages(dockerfile)
    runs = [i for i in dockerfile if i.keyword == "RUN"]
    installs = [i for i in runs if re.search(r"(^|&& )make install( |$)", i.arguments)]
    assert len(installs) == 1 and installs[0] in build
    assert not [i for i in runs if re.search(r"\bpip3?\b|\bpython3?(\.\d+)? -m pip\b|\buv\b", i.arguments)], (
        "install Python packages only through `make install` (one source of truth)"
    )
    workdir = [i.arguments for i in build if i.keyword == "WORKDIR" and i.line < installs[0].line][-1]
    assert workdir == IMAGE_ROOT

    # Everything make install reads is in the build stage's WORKDIR when it runs.
    present = copied_before(build, installs[0].line)
    makefile = (REPO / "Makefile").read_text()
    venv = re.search(r"^VENV\s*:?=\s*(\S+)", makefile, re.MULTILINE)
    assert venv is not None
    prerequisites = re.search(r"^\$\(VENV\)/\.installed:(.*)$", makefile, re.MULTILINE)
    assert prerequisites is not None
    needed = {"Makefile", *prerequisites.group(1).split()}
    for command in make_install_commands():
        if " install " in command and "pip" in command:
            for word in shlex.split(command)[1:]:
                if re.fullmatch(r"\.(\[.*\])?|\./.+", word):  # a local project: `.[test]`, `./plugins`
                    needed.add(re.sub(r"\[.*\]$", "", word).removeprefix("./").removeprefix("."))
    needed.discard("")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    needed |= {"pyproject.toml", project["readme"], "kgserver", "migrations"}  # the root project
    missing = {path for path in needed if not covered(path, present)}
    assert missing == set(), f"make install needs {missing} in the image"
    assert "plugins" in needed, "the plugins' project is found in make install's pip calls"

    # The console scripts land where the runtime stage's PATH looks.
    env = " ".join(i.arguments for i in runtime if i.keyword == "ENV")
    assert f"PATH={IMAGE_ROOT}/{venv.group(1)}/bin:$PATH" in env


def test_the_build_uses_the_pins_and_cpu_torch(dockerfile: list[Instruction]) -> None:
    commands = make_install_commands()
    pip = [c for c in commands if " install " in c and "pip" in c]
    assert pip and all("-c constraints.txt" in c for c in pip), "every pip call is constrained"
    args = {i.arguments.split("=", 1)[0]: i.arguments.partition("=")[2] for i in dockerfile if i.keyword == "ARG"}
    assert args["TORCH_INDEX"].endswith("/whl/cpu")
    assert args["PYTHON_IMAGE"].startswith("python:3.11-")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11,<3.12"
    assert re.search(r"^PYTHON \?= python3\.11$", (REPO / "Makefile").read_text(), re.MULTILINE)


def test_the_image_runs_kgserver_as_the_non_root_user_the_pods_expect(dockerfile: list[Instruction]) -> None:
    _, runtime = stages(dockerfile)
    [user] = [i.arguments for i in runtime if i.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    assert runtime[-1].keyword == "CMD"
    [entrypoint] = [json.loads(i.arguments) for i in runtime if i.keyword == "ENTRYPOINT"]
    assert entrypoint == ["kgserver"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "kgserver" in scripts
    for name in ("dev", "prod"):
        for manifest in environment(name):
            for where, pod in pod_templates(manifest):
                images = {c["image"] for c in containers(pod)}
                if not any(image.startswith("postgres:") for image in images):
                    security = pod["spec"]["securityContext"]
                    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid)), where


def test_the_image_has_the_files_the_manifests_name(dockerfile: list[Instruction]) -> None:
    build, _ = stages(dockerfile)
    present = copied_before(build, 10**9)
    for name in ("dev", "prod"):
        for manifest in environment(name):
            for _, pod in pod_templates(manifest):
                for container in containers(pod):
                    for word in container.get("args", []):
                        if word.startswith(IMAGE_ROOT + "/"):
                            relative = Path(word.removeprefix(IMAGE_ROOT + "/"))
                            assert covered(str(relative), present), word
                            assert (REPO / relative).exists(), word


def test_dockerignore_keeps_local_state_out_and_what_the_build_copies_in(dockerfile: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", ".kgserver", "bench", "**/__pycache__"} <= set(patterns)

    def ignored(path: str) -> bool:
        parts = Path(path).parts
        return any(
            fnmatch.fnmatch(str(Path(*parts[:n])), pattern.removeprefix("**/"))
            or fnmatch.fnmatch(parts[n - 1], pattern.removeprefix("**/"))
            for pattern in patterns
            for n in range(1, len(parts) + 1)
        )

    for stage in stages(dockerfile):
        for sources, _, _ in copies(stage):
            for source in sources:
                assert (REPO / source).exists(), source
                assert not ignored(source.rstrip("/")), f"{source} is copied but .dockerignore leaves it out"
    assert ignored("kgserver/__pycache__/x.pyc") and ignored(".venv/bin/python") and not ignored("kgserver/cli")


def stage_tree(stage: list[Instruction], line: int, target: Path) -> None:
    """Lay out, in `target`, what the stage's COPYs put in its WORKDIR before `line`."""
    for path in sorted(copied_before(stage, line)):
        source = REPO / path
        if source.is_dir():
            shutil.copytree(source, target / path, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, target / path)


def test_make_install_finds_everything_it_depends_on_in_the_build_stage(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """`make -n install` in a tree holding only what the Dockerfile copied: make checks that
    every prerequisite of the install target is there (it stops with "No rule to make target")."""
    build, _ = stages(dockerfile)
    [install] = [i for i in build if i.keyword == "RUN" and "make install" in i.arguments]
    stage_tree(build, install.line, tmp_path)

    result = subprocess.run(
        ["make", "-n", "install"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "pip install" in result.stdout

    (tmp_path / "plugins" / "pyproject.toml").unlink()
    result = subprocess.run(
        ["make", "-n", "install"], check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "plugins/pyproject.toml" in result.stderr
