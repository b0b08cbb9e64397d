"""Moving an alias in a real MLflow registry swaps the served version under load, losing nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import grpc
import psutil
import pytest
import torch

from kgserver.client import KGClient
from kgserver.graph import Snapshot
from kgserver.models import load
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.server import KGServer, ServeConfig
from kgserver.serving.source import registry_source
from kgserver.tracking import TrainingRun
from kgserver.tracking.backend import client_for
from kgserver.tracking.catalog import promote

from .helpers import NUM_RELATIONS, ServerProcess, entity, relation, train_model

NAME = "toy-compgcn"
CLIENT_THREADS = 16
QUERIES = [(e, r) for e in range(0, 60, 7) for r in range(NUM_RELATIONS)]


def register(snapshot: Snapshot, seed: int, uri: str) -> str:
    """Train, log and register one version the way `kgserver train` does."""
    model = train_model(snapshot, seed=seed, epochs=3)
    with TrainingRun.start(model, snapshot, tracking_uri=uri, register_as=NAME) as run:
        return run.finish(SimpleNamespace(model=model, metrics={"test_mrr": 0.1 * seed}, history=[]))


def expected_answers(version: str, uri: str) -> list[list[int]]:
    loaded = load(version, tracking_uri=uri)
    heads = torch.tensor([e for e, _ in QUERIES])
    relations = torch.tensor([r for _, r in QUERIES])
    return torch.topk(loaded.score_tails(heads, relations), 5, dim=1).indices.tolist()


@pytest.mark.timeout(600)
def test_alias_move_swaps_versions_under_load_without_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_snapshot: Snapshot
) -> None:
    monkeypatch.setenv("KGSERVER_HOME", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    first, second = register(toy_snapshot, 1, uri), register(toy_snapshot, 2, uri)
    assert (first, second) == (f"{NAME}/1", f"{NAME}/2")
    promote(client_for(uri), NAME, "1", "champion")
    expected = {version: expected_answers(version, uri) for version in (first, second)}
    assert expected[first] != expected[second], "the two versions must answer differently"

    resolve, build = registry_source(uri, None)
    server = KGServer(ServeConfig(models=[f"{NAME}@champion"], port=0, poll_seconds=0.2), resolve, build)
    server.start()
    server.load()
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(CLIENT_THREADS)]
    failures: list[str] = []

    def client_loop(index: int) -> None:
        with KGClient(server.address, timeout=30) as client:
            n = index
            while not stop.is_set():
                e, r = QUERIES[n % len(QUERIES)]
                try:
                    answer = client.predict_tails([(entity(e), relation(r))], k=5)
                except Exception as error:  # every failure is counted, none expected
                    failures.append(repr(error))
                    continue
                got = [int(x.entity.rsplit("/", 1)[1]) for x in answer.results[0]]
                if got != expected[answer.model_version][n % len(QUERIES)]:
                    failures.append(f"{answer.model_version} answered {got} for {(e, r)}")
                seen[index].append(answer.model_version)
                n += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENT_THREADS)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(len(s) >= 5 for s in seen):
            time.sleep(0.05)  # every thread is answered by version 1 before the alias moves
        promote(client_for(uri), NAME, "2", "champion")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(s and s[-1] == second for s in seen):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        server.stop(grace=5)

    assert failures == []
    for versions in seen:
        assert versions[0] == first and versions[-1] == second
        switch = versions.index(second)
        assert set(versions[switch:]) == {second}, "a thread saw the old version after the new one"
    assert sum(len(v) for v in seen) > 100


@pytest.mark.timeout(600)
def test_alias_move_swaps_every_worker_process_under_load_without_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_snapshot: Snapshot
) -> None:
    monkeypatch.setenv("KGSERVER_HOME", str(tmp_path))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first, second = register(toy_snapshot, 1, uri), register(toy_snapshot, 2, uri)
    promote(client_for(uri), NAME, "1", "champion")
    expected = {version: expected_answers(version, uri) for version in (first, second)}
    server = ServerProcess(
        ["--model", f"{NAME}@champion", "--tracking-uri", uri, "--workers", "2", "--poll-seconds", "0.2"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    workers = [child.pid for child in psutil.Process(server.pid).children()]
    assert len(workers) == 2
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(CLIENT_THREADS)]
    failures: list[str] = []

    def client_loop(index: int) -> None:
        # Each thread its own connection, so the kernel spreads the threads over both workers.
        with grpc.insecure_channel(server.address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            predict = pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails
            n = index
            while not stop.is_set():
                e, r = QUERIES[n % len(QUERIES)]
                request = pb.PredictRequest(queries=[pb.Query(entity=entity(e), relation=relation(r))], k=5)
                try:
                    answer = predict(request, timeout=30)
                except grpc.RpcError as error:  # every failure is counted, none expected
                    failures.append(f"{error.code()}: {error.details()}")
                    continue
                got = [int(x.entity.rsplit("/", 1)[1]) for x in answer.results[0].entities]
                if got != expected[answer.model_version][n % len(QUERIES)]:
                    failures.append(f"{answer.model_version} answered {got} for {(e, r)}")
                seen[index].append(answer.model_version)
                n += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENT_THREADS)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(len(s) >= 5 for s in seen):
            time.sleep(0.05)
        promote(client_for(uri), NAME, "2", "champion")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(s and s[-1] == second for s in seen):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        code = server.stop()

    assert failures == [], failures[:10]
    for versions in seen:
        assert versions[0] == first and versions[-1] == second
        switch = versions.index(second)
        assert set(versions[switch:]) == {second}, "a connection saw the old version after the new one"
    log = server.log()
    for pid in workers:
        assert f"[{pid}] kgserver.serving.holder: {NAME}@champion: now serving {second}" in log, log
    assert code == 0
