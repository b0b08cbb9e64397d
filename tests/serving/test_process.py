"""The real ``kgserver serve`` process: robustness under mixed load, SIGTERM drain, the query CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgserver.graph import Snapshot
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.registry import Hyperparameters
from kgserver.tracking.bundle import LoadedModel, save_bundle

from . import slow_plugin
from .helpers import ServerProcess, entity, relation

OK, NOT_FOUND, INVALID, INTERNAL = (
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,
)
Q = pb.Query(entity=entity(3), relation=relation(1))
T = pb.Triple(head=entity(3), relation=relation(1), tail=entity(4))
# (method, request, expected status): valid and invalid requests in one rotation.
MIX: list[tuple[str, Any, grpc.StatusCode]] = [
    ("PredictTails", pb.PredictRequest(queries=[Q, Q], k=10), OK),
    ("PredictHeads", pb.PredictRequest(queries=[Q], k=5, filter_known=True), OK),
    ("ScoreTriples", pb.ScoreTriplesRequest(triples=[T, T]), OK),
    ("GetEntityEmbeddings", pb.GetEntityEmbeddingsRequest(entities=[entity(1), entity(2)]), OK),
    ("ListModels", pb.ListModelsRequest(), OK),
    ("PredictTails", pb.PredictRequest(queries=[pb.Query(entity="urn:nope", relation=relation(1))], k=3), NOT_FOUND),
    ("PredictHeads", pb.PredictRequest(queries=[pb.Query(entity=entity(1), relation="urn:nope")], k=3), NOT_FOUND),
    ("PredictTails", pb.PredictRequest(queries=[Q], k=0), INVALID),
    ("PredictTails", pb.PredictRequest(queries=[Q], k=21), INVALID),
    ("PredictHeads", pb.PredictRequest(queries=[], k=3), INVALID),
    ("PredictTails", pb.PredictRequest(queries=[Q] * 9, k=3), INVALID),
    ("PredictTails", pb.PredictRequest(model="toy@nope", queries=[Q], k=3), NOT_FOUND),
    (
        "ScoreTriples",
        pb.ScoreTriplesRequest(triples=[pb.Triple(head="_:x", relation=relation(0), tail=entity(0))]),
        NOT_FOUND,
    ),
    ("GetEntityEmbeddings", pb.GetEntityEmbeddingsRequest(entities=[entity(0)] * 9), INVALID),
    ("raw", b"\xff\xfe not a protobuf", INVALID),
]
CLIENTS = 64
REQUESTS_PER_CLIENT = 2000


@pytest.fixture()
def served(bundle_dir: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        ["--model", str(bundle_dir), "--max-k", "20", "--max-batch", "8", "--poll-seconds", "0"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        yield process
    finally:
        process.stop()


def call(
    channel: grpc.Channel, stubs: pb_grpc.KnowledgeGraphCompletionStub, method: str, request: Any
) -> grpc.StatusCode:
    try:
        if method == "raw":
            channel.unary_unary("/kgserver.v1.KnowledgeGraphCompletion/PredictTails")(request, timeout=60)
        else:
            getattr(stubs, method)(request, timeout=60)
    except grpc.RpcError as error:
        return error.code()
    return OK


def hammer(address: str, clients: int, requests: int) -> list[str]:
    """``clients`` threads, one channel each, sending ``requests`` calls from the mix; mismatches returned."""
    problems: list[str] = []

    def client(index: int) -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            for n in range(requests):
                method, request, expected = MIX[(index + n) % len(MIX)]
                got = call(channel, stub, method, request)
                if got != expected:
                    problems.append(f"{method} #{(index + n) % len(MIX)}: expected {expected}, got {got}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mixed_load_from_64_clients_gets_every_status_right_without_growth(served: ServerProcess) -> None:
    assert hammer(served.address, CLIENTS, 50) == []  # warm-up: threads, channels, allocator pools
    before = anonymous_rss(served.pid)
    started = time.monotonic()
    problems = hammer(served.address, CLIENTS, REQUESTS_PER_CLIENT)
    seconds = time.monotonic() - started
    after = anonymous_rss(served.pid)
    assert problems == [], problems[:10]
    assert served.process.poll() is None, "the server died"
    with grpc.insecure_channel(served.address) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert after <= 1.10 * before, f"anonymous RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB"
    assert "Traceback" not in served.log()
    print(
        f"\n{CLIENTS * REQUESTS_PER_CLIENT} calls in {seconds:.1f} s; "
        f"anonymous RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB"
    )


def anonymous_rss(pid: int) -> int:
    """Bytes of a process's resident anonymous memory (``RssAnon``): the heap that a leak grows.

    Not the whole RSS, which also counts mapped library pages the kernel may drop at any time
    (a proactive reclaimer such as DAMON's pageout halved a server's RSS during this test on one
    machine), so it can shrink under load and hide growth, or fail a bound on change."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"/proc/{pid}/status has no RssAnon line")


@pytest.mark.timeout(300)
def test_sigterm_drains_in_flight_requests_and_exits_0(tmp_path: Path, toy_snapshot: Snapshot) -> None:
    # The slow model's decoder sleeps 1 s per batch, so calls are provably in flight when SIGTERM lands.
    model = slow_plugin.SlowModel(
        toy_snapshot.num_entities, toy_snapshot.num_relations, Hyperparameters(embedding_dim=8)
    )
    bundle = save_bundle(tmp_path / "slow", model, toy_snapshot)
    process = ServerProcess(
        ["--model", str(bundle), "--poll-seconds", "0"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
        launcher=[sys.executable, str(Path(slow_plugin.__file__))],
    )
    results: list[Any] = []

    def slow_call() -> None:
        with grpc.insecure_channel(process.address) as channel:
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            try:
                results.append(stub.PredictTails(pb.PredictRequest(queries=[Q], k=3), timeout=30).model_version)
            except grpc.RpcError as error:
                results.append(error.code())

    threads = [threading.Thread(target=slow_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    sent = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join()
    code = process.process.wait(60)
    assert code == 0, process.log()
    assert time.monotonic() - sent > 0.5, "the calls were not in flight when SIGTERM arrived"
    assert results == [str(bundle.resolve())] * 8
    assert "SIGTERM received" in process.log()
    with grpc.insecure_channel(process.address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.KnowledgeGraphCompletionStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    process.stop()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [str(Path(sys.executable).parent / "kgserver"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_query_cli_prints_the_servers_answers(served: ServerProcess, reference: LoadedModel, tmp_path: Path) -> None:
    env = {"KGSERVER_HOME": str(tmp_path)}
    common = ["--server", served.address, "--no-labels"]
    tails = run_cli(
        "query", "tails", "--head", entity(2), "--relation", relation(0), "-k", "5", *common, "--json", env=env
    )
    assert tails.returncode == 0, tails.stderr
    payload = json.loads(tails.stdout)
    entity_emb, relation_emb = reference.encode()
    with torch.no_grad():
        expected = torch.topk(reference.model.score(entity_emb[[2]], relation_emb[[0]], entity_emb), 5).indices[0]
    assert [r["entity"] for r in payload["results"]] == [entity(i) for i in expected.tolist()]
    assert [r["rank"] for r in payload["results"]] == [1, 2, 3, 4, 5]

    heads = run_cli("query", "heads", "--tail", entity(2), "--relation", relation(0), "-k", "3", *common, env=env)
    assert heads.returncode == 0, heads.stderr
    assert "#" in heads.stdout and "score" in heads.stdout

    score = run_cli("query", "score", entity(1), relation(0), entity(2), "--server", served.address, "--json", env=env)
    assert score.returncode == 0, score.stderr
    assert len(json.loads(score.stdout)["triples"]) == 1

    embed = run_cli("query", "embed", entity(1), entity(2), "--server", served.address, "--json", env=env)
    vectors = json.loads(embed.stdout)["embeddings"]
    assert torch.tensor(vectors[entity(1)]) == pytest.approx(entity_emb[1], abs=1e-6)

    unknown = run_cli("query", "tails", "--head", "urn:missing", "--relation", relation(0), *common, env=env)
    assert unknown.returncode != 0
    assert "NOT_FOUND" in unknown.stderr and "urn:missing" in unknown.stderr
    bad_score = run_cli("query", "score", entity(1), relation(0), "--server", served.address, env=env)
    assert bad_score.returncode != 0 and "multiple of 3" in bad_score.stderr


def test_query_health_reports_serving_and_unreachable(served: ServerProcess, tmp_path: Path) -> None:
    env = {"KGSERVER_HOME": str(tmp_path)}
    ready = run_cli("query", "health", "--server", served.address, "--json", env=env)
    assert ready.returncode == 0, ready.stderr
    assert json.loads(ready.stdout)["status"] == "SERVING"
    served.stop()
    gone = run_cli("query", "health", "--server", served.address, "--wait", "1", env=env)
    assert gone.returncode == 1
    assert "UNREACHABLE" in gone.stdout


def test_serve_refuses_a_model_it_cannot_find(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-bundle"
    result = run_cli("serve", "--model", str(missing), "--port", "0", env={"KGSERVER_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "no-such-bundle" in result.stderr and "Traceback" not in result.stderr
