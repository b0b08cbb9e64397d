"""Fixtures of the serving tests (see helpers.py for how the model is made)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgserver.graph import Snapshot
from kgserver.serving.server import KGServer
from kgserver.tracking.bundle import LoadedModel, load_bundle, save_bundle

from .helpers import make_snapshot, running_server, train_model


@pytest.fixture(scope="session")
def toy_snapshot() -> Snapshot:
    return make_snapshot()


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, toy_snapshot: Snapshot) -> Path:
    return save_bundle(tmp_path_factory.mktemp("bundle") / "toy", train_model(toy_snapshot, seed=1), toy_snapshot)


@pytest.fixture(scope="session")
def reference(bundle_dir: Path) -> LoadedModel:
    """The same bundle loaded in-process: what the server's answers must equal."""
    return load_bundle(bundle_dir, version="toy/1")


@pytest.fixture(scope="module")
def server(bundle_dir: Path) -> Iterator[KGServer]:
    with running_server({"toy@champion": (bundle_dir, "toy/1")}, max_k=60, max_batch=16) as running:
        yield running


@pytest.fixture()
def channel(server: KGServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened
