"""``kgserver serve --workers N``: N real server processes on one port, started and stopped as a unit."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.shared import RAM_FILESYSTEM, SET_PREFIX

from .helpers import NUM_ENTITIES, ServerProcess, entity, relation
from .test_process import run_cli
from .test_shared import mapped_files

CHANNELS = 24
"""Channels opened by a test: each is one connection, which the kernel gives to one worker."""
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""Channel option: without it, channels of one process to one address share a single connection."""


@pytest.fixture()
def two_workers(bundle_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        ["--model", str(bundle_dir), "--workers", "2", "--poll-seconds", "0"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        yield process
    finally:
        process.stop()


def workers_of(served: ServerProcess) -> list[psutil.Process]:
    return psutil.Process(served.pid).children()


def reaches_serving(channel: grpc.Channel, within: float) -> bool:
    """Whether the health service on ``channel`` says SERVING within ``within`` seconds."""
    deadline = time.monotonic() + within
    stub = health_pb2_grpc.HealthStub(channel)
    while True:
        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        if status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
            return status == health_pb2.HealthCheckResponse.SERVING
        time.sleep(0.02)


def connected_workers(served: ServerProcess, port: int) -> set[int]:
    """Pids of the workers holding an established connection on ``port``."""
    return {
        worker.pid
        for worker in workers_of(served)
        for connection in worker.net_connections("tcp")
        if connection.status == psutil.CONN_ESTABLISHED and connection.laddr.port == port
    }


@pytest.mark.timeout(300)
def test_two_workers_share_the_port_answer_alike_and_drain_together_on_sigterm(two_workers: ServerProcess) -> None:
    workers = workers_of(two_workers)
    assert len(workers) == 2
    port = int(two_workers.address.rsplit(":", 1)[1])
    request = pb.PredictRequest(queries=[pb.Query(entity=entity(3), relation=relation(1))], k=5)
    channels = [grpc.insecure_channel(two_workers.address, OWN_CONNECTION) for _ in range(CHANNELS)]
    try:
        answers = set()
        for channel in channels:
            # every worker says SERVING once it has seen all of them loaded; a worker learns
            # that within its peer poll (PEER_POLL_SECONDS), so a connection to the second may
            # lag the first by that much, never say SERVING early
            assert reaches_serving(channel, within=2.0)
            answer = pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails(request, timeout=30)
            answers.add(tuple(e.entity for e in answer.results[0].entities))
        assert len(answers) == 1, "the workers serve the same model and answer alike"
        assert connected_workers(two_workers, port) == {w.pid for w in workers}, "both workers took connections"
    finally:
        for channel in channels:
            channel.close()
    assert two_workers.stop() == 0
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    log = two_workers.log()
    assert log.count("SIGTERM received") == 2, log
    assert "all workers stopped" in log
    assert "Traceback" not in log


def answers(channel: grpc.Channel) -> dict[str, list[float]]:
    """Every entity's embedding and its score as the tail of a few queries, from one connection."""
    stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
    everyone = [entity(i) for i in range(NUM_ENTITIES)]
    embedded = stub.GetEntityEmbeddings(pb.GetEntityEmbeddingsRequest(entities=everyone), timeout=30)
    found = {e.entity: list(e.values) for e in embedded.embeddings}
    queries = [pb.Query(entity=entity(i), relation=relation(i % 4)) for i in range(0, NUM_ENTITIES, 7)]
    predicted = stub.PredictTails(pb.PredictRequest(queries=queries, k=NUM_ENTITIES), timeout=30)
    for query, result in zip(queries, predicted.results):
        found[f"{query.entity} {query.relation}"] = [s.score for s in sorted(result.entities, key=lambda s: s.entity)]
    return found


@pytest.mark.timeout(300)
def test_two_workers_serve_one_mapped_copy_of_the_embeddings_and_answer_as_one_worker(
    two_workers: ServerProcess, bundle_dir: Path, tmp_path: Path
) -> None:
    [directory] = RAM_FILESYSTEM.glob(f"{SET_PREFIX}{two_workers.pid}-*")
    files = sorted(str(path) for path in directory.iterdir())
    assert len(files) == 2, "the entity and the relation table, once for the set"
    workers = workers_of(two_workers)
    for worker in workers:
        assert sorted(set(mapped_files(directory, worker.pid))) == files, "each worker serves the mappings"

    single = ServerProcess(
        ["--model", str(bundle_dir), "--poll-seconds", "0"],
        tmp_path / "single.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        with grpc.insecure_channel(single.address) as channel:
            expected = answers(channel)
    finally:
        assert single.stop() == 0
    port = int(two_workers.address.rsplit(":", 1)[1])
    channels = [grpc.insecure_channel(two_workers.address, OWN_CONNECTION) for _ in range(CHANNELS)]
    try:
        for channel in channels:
            assert reaches_serving(channel, within=2.0)
            got = answers(channel)
            assert got.keys() == expected.keys()
            for key, values in expected.items():
                assert got[key] == pytest.approx(values, abs=1e-6), key
        assert connected_workers(two_workers, port) == {w.pid for w in workers}, "both workers answered"
    finally:
        for channel in channels:
            channel.close()
    assert two_workers.stop() == 0
    assert not directory.exists(), "the parent removes the set's directory when the set stops"
    assert "not shared" not in two_workers.log()


@pytest.mark.timeout(300)
def test_one_worker_shares_nothing(bundle_dir: Path, tmp_path: Path) -> None:
    single = ServerProcess(
        ["--model", str(bundle_dir), "--poll-seconds", "0"],
        tmp_path / "single.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        assert not list(RAM_FILESYSTEM.glob(f"{SET_PREFIX}{single.pid}-*"))
        assert SET_PREFIX not in Path(f"/proc/{single.pid}/maps").read_text()
    finally:
        assert single.stop() == 0


@pytest.mark.timeout(300)
def test_a_worker_that_dies_stops_the_set_with_a_nonzero_exit(two_workers: ServerProcess) -> None:
    victim, survivor = workers_of(two_workers)
    os.kill(victim.pid, signal.SIGKILL)
    code = two_workers.process.wait(60)
    assert code != 0
    survivor.wait(10)
    log = two_workers.log()
    assert f"(pid {victim.pid}) exited with -9; stopping the other workers" in log
    assert "serving worker" in log and "was killed by signal 9" in log


@pytest.mark.timeout(300)
def test_health_stays_not_serving_until_every_worker_has_loaded(bundle_dir: Path, tmp_path: Path) -> None:
    # Worker 1's model cannot load: worker 0 loads and must still never say SERVING; the set then exits non-zero.
    log_path = tmp_path / "server.log"
    with pytest.raises(RuntimeError, match="exited with") as failed:
        ServerProcess(
            ["--model", str(bundle_dir), "--model", str(tmp_path / "missing-bundle"), "--workers", "2",
             "--poll-seconds", "0"],
            log_path,
            env={"KGSERVER_HOME": str(tmp_path)},
        )
    log = str(failed.value)
    assert "ready (pid" not in log
    assert "SERVING" not in log
    assert re.search(r"serving worker \d \(pid \d+\) exited with", log), log


@pytest.mark.timeout(120)
def test_workers_refuse_a_port_in_use_with_a_clear_error(bundle_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--model", str(bundle_dir), "--workers", "2", "--port", str(port),
            env={"KGSERVER_HOME": str(tmp_path)},
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_workers_must_be_at_least_one(bundle_dir: Path, tmp_path: Path) -> None:
    result = run_cli("serve", "--model", str(bundle_dir), "--workers", "0", env={"KGSERVER_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "Traceback" not in result.stderr
