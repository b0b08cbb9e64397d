"""kgserver installed from its wheels, outside any checkout, migrates and imports.

The wheels are built from this tree and installed with their dependencies into a
new virtual environment under ``constraints.txt``; the commands then run from a
directory that holds no kgserver source, so nothing can be found in the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def packages_in_tree() -> set[str]:
    """Every Python package of the source tree, under the name it installs as."""
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "kgserver").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    found |= {
        "kgserver_migrations" + "".join(f".{part}" for part in init.parent.relative_to(REPO / "migrations").parts)
        for init in (REPO / "migrations").rglob("__init__.py")
    }
    return found


def test_the_package_list_names_every_package_of_the_tree() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(declared) == packages_in_tree()


def run(*command: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.mark.timeout(1800)
def test_wheels_install_into_a_fresh_venv_and_run(tmp_path: Path) -> None:
    # a copy of the sources: a build writes build/ and *.egg-info/ next to them
    source = tmp_path / "source"
    shutil.copytree(
        REPO, source, ignore=shutil.ignore_patterns(".git", ".venv", ".kgserver", "build", "*.egg-info", "__pycache__")
    )
    wheels = tmp_path / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels,
        source, source / "plugins", cwd=tmp_path)  # fmt: skip
    built = sorted(path.name for path in wheels.glob("*.whl"))
    assert [name.split("-")[0] for name in built] == ["kgserver", "kgserver_plugins"]
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    run(*pip, "-c", REPO / "constraints.txt", *sorted(wheels.glob("*.whl")), cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KGSERVER_", "PYTHON"))}
    env.update(HOME=str(work), KGSERVER_HOME=str(work / "kg"))
    kgserver = venv / "bin" / "kgserver"
    location = run(venv / "bin" / "python", "-c",
                   "import kgserver, kgserver_migrations; print(kgserver.__file__, kgserver_migrations.__file__)",
                   cwd=work, env=env).stdout
    assert str(REPO) not in location and str(venv) in location
    db = f"sqlite:///{work / 'store.db'}"
    run(kgserver, "db", "upgrade", "--db", db, cwd=work, env=env)
    data = work / "toy.tsv"
    data.write_text("a\tlikes\tb\nb\tlikes\tc\nc\tknows\ta\n", encoding="utf-8")
    run(kgserver, "import", data, "--graph", "toy", "--base", "http://example.org/", "--db", db, cwd=work, env=env)
    graphs = json.loads(run(kgserver, "graphs", "--json", "--db", db, cwd=work, env=env).stdout)
    assert [(graph["name"], graph["triples"]["total"]) for graph in graphs] == [("toy", 3)]
    models = run(kgserver, "models", "available", "--json", cwd=work, env=env).stdout
    assert {"rgcn", "compgcn", "gatv2"} <= set(json.loads(models)["models"])
