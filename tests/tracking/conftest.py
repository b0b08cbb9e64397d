"""Fixtures of the tracking tests: an isolated KGSERVER_HOME and a tiny snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kgserver.graph import Snapshot

from .helpers import make_snapshot


@contextmanager
def isolated_home(root: Path) -> Iterator[Path]:
    """KGSERVER_HOME at ``root/home``, no MLFLOW_TRACKING_URI, working directory ``root/cwd``.

    The working directory must stay empty: an ``mlflow.db`` or ``mlruns`` appearing
    there means some call used MLflow's process-global default store instead of ours.
    """
    cwd = root / "cwd"
    cwd.mkdir(parents=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KGSERVER_HOME", str(root / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(cwd)
        yield root / "home"
    leaked = sorted(p.name for p in cwd.iterdir())
    assert not leaked, f"MLflow wrote to the working directory instead of KGSERVER_HOME: {leaked}"


@pytest.fixture()
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh KGSERVER_HOME: the embedded store is the default."""
    with isolated_home(tmp_path) as path:
        yield path


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Like ``home`` but shared by a module's tests (one training run serves many checks)."""
    with isolated_home(tmp_path_factory.mktemp("tracking")) as path:
        yield path


@pytest.fixture(scope="session")
def snapshot() -> Snapshot:
    return make_snapshot()
