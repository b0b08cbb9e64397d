"""Hostile gRPC requests: echoed input, oversized IRIs and model names, answers too large to send.

Every test runs against a real server on a loopback port, asserts the exact
status code, that the message names its culprit (a bounded prefix, the field,
the budget) and stays short, and that no traceback reaches the client.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from serving.helpers import long_iri_snapshot, random_bundle, relation, running_server

from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.server import KGServer
from kgserver.serving.servicer import MAX_IRI_CHARS, MAX_QUOTED_CHARS

NUM_ENTITIES = 1200
IRI_CHARS = 170  # the example: 400 queries x k=1000 of 170-character IRIs exceed 64 MiB
MAX_DETAILS = 2048  # every message must stay far below the ~8 KiB a client accepts in trailers
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("wide") / "bundle", long_iri_snapshot(NUM_ENTITIES, IRI_CHARS))


@pytest.fixture(scope="module")
def server(wide_bundle: Path) -> Iterator[KGServer]:
    with running_server({"wide@champion": (wide_bundle, "wide/1")}) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server: KGServer) -> Iterator[pb_grpc.KnowledgeGraphCompletionStub]:
    with grpc.insecure_channel(server.address, options=CLIENT_OPTIONS) as channel:
        yield pb_grpc.KnowledgeGraphCompletionStub(channel)


def refused(stub: pb_grpc.KnowledgeGraphCompletionStub, method: str, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request, timeout=60)
    details = raised.value.details() or ""
    assert len(details) <= MAX_DETAILS, f"{raised.value.code()}: {len(details)} characters"
    assert "Traceback" not in details
    return raised.value


def entity(server: KGServer, i: int) -> str:
    return server.holder.get().entities[i]


def query(entity_iri: str, relation_iri: str = relation(0)) -> pb.Query:
    return pb.Query(entity=entity_iri, relation=relation_iri)


# --- echoed input ------------------------------------------------------------------


def test_an_unknown_iri_at_the_maximum_length_is_not_found_quoting_a_prefix(
    server: KGServer, stub: pb_grpc.KnowledgeGraphCompletionStub
) -> None:
    iri = "http://nowhere.example/" + "q" * (MAX_IRI_CHARS - 23)
    assert len(iri) == MAX_IRI_CHARS
    error = refused(stub, "PredictTails", pb.PredictRequest(queries=[query(iri)], k=3))
    assert error.code() == NOT_FOUND
    assert f"unknown entity: {iri[:MAX_QUOTED_CHARS]!r}... ({MAX_IRI_CHARS:,} characters)" == error.details()


@pytest.mark.parametrize("length", [10_000, 1_000_000], ids=["10KB", "1MB"])
@pytest.mark.parametrize(
    "method, make, field",
    [
        ("PredictTails", lambda iri, e: pb.PredictRequest(queries=[query(e), query(iri)], k=3), "queries[1].entity"),
        ("PredictHeads", lambda iri, e: pb.PredictRequest(queries=[query(e, iri)], k=3), "queries[0].relation"),
        (
            "ScoreTriples",
            lambda iri, e: pb.ScoreTriplesRequest(triples=[pb.Triple(head=e, relation=relation(1), tail=iri)]),
            "triples[0].tail",
        ),
        ("GetEntityEmbeddings", lambda iri, e: pb.GetEntityEmbeddingsRequest(entities=[e, iri]), "entities[1]"),
    ],
    ids=["tails-entity", "heads-relation", "score-tail", "embed"],
)
def test_iris_above_the_maximum_are_invalid_arguments_naming_field_and_prefix(
    server: KGServer, stub: pb_grpc.KnowledgeGraphCompletionStub, length: int, method: str, make: Any, field: str
) -> None:
    iri = "http://too.long.example/" + "z" * (length - 24)
    error = refused(stub, method, make(iri, entity(server, 7)))
    assert error.code() == INVALID
    details = error.details()
    assert details.startswith(f"{field} is {length:,} characters long; an IRI may have at most {MAX_IRI_CHARS:,}")
    assert repr(iri[:MAX_QUOTED_CHARS]) in details and iri[: MAX_QUOTED_CHARS + 1] not in details


def test_a_long_model_name_is_not_found_quoting_a_prefix(
    server: KGServer, stub: pb_grpc.KnowledgeGraphCompletionStub
) -> None:
    name = "model-" + "n" * 100_000
    error = refused(stub, "PredictTails", pb.PredictRequest(model=name, queries=[query(entity(server, 0))], k=3))
    assert error.code() == NOT_FOUND
    assert error.details().startswith(f"model {name[:MAX_QUOTED_CHARS]!r}... (100,006 characters) is not served here")
    assert "wide@champion (wide/1)" in error.details()


# --- answers larger than the transport allows --------------------------------------------


def test_an_answer_that_cannot_be_sent_is_refused_before_scoring(
    server: KGServer, stub: pb_grpc.KnowledgeGraphCompletionStub, caplog: pytest.LogCaptureFixture
) -> None:
    queries = [query(entity(server, i % NUM_ENTITIES)) for i in range(400)]
    jobs_before = server.scorer.stats.jobs
    with caplog.at_level(logging.WARNING, logger="kgserver.serving.servicer"):
        error = refused(stub, "PredictTails", pb.PredictRequest(queries=queries, k=1000))
    assert error.code() == INVALID
    assert "response budget (the gRPC message size limit)" in error.details()
    assert f"more than the {64 * 2**20:,}-byte" in error.details()
    assert server.scorer.stats.jobs == jobs_before, "the request was scored before being refused"
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.getMessage().startswith("PredictTails refused: the answer could take up to ")
    assert "example.org" not in record.getMessage() and len(record.getMessage()) < 400


def test_the_largest_answer_under_the_limit_is_sent_and_within_its_bound(
    server: KGServer, stub: pb_grpc.KnowledgeGraphCompletionStub
) -> None:
    queries = [query(entity(server, i)) for i in range(300)]
    answer = stub.PredictTails(pb.PredictRequest(queries=queries, k=1000), timeout=120)
    assert len(answer.results) == 300 and all(len(r.entities) == 1000 for r in answer.results)
    bound = server.budget.predict_bytes(server.holder.get(), 300, 1000)
    assert 0.99 * bound <= answer.ByteSize() <= bound <= 64 * 2**20


def test_concurrent_large_answers_share_the_memory_budget(wide_bundle: Path) -> None:
    """Six answers of ~7 MB under an 8 MiB budget: all answered, never more than the budget at once."""
    with running_server({"wide@champion": (wide_bundle, "wide/1")}, response_memory_mb=8) as server:
        served = server.holder.get()
        bound = server.budget.predict_bytes(served, 40, 1000)
        assert 6 * 2**20 < bound <= 8 * 2**20
        results: list[object] = []

        def ask(offset: int) -> None:
            with grpc.insecure_channel(server.address, options=CLIENT_OPTIONS) as channel:
                request = pb.PredictRequest(queries=[query(served.entities[offset + i]) for i in range(40)], k=1000)
                try:
                    results.append(
                        len(pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails(request, timeout=120).results)
                    )
                except grpc.RpcError as error:
                    results.append(error.code())

        threads = [threading.Thread(target=ask, args=(i * 40,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [40] * 6
        assert server.budget.peak == bound, "answers were built beyond the budget, or one at a time was never reached"
        assert server.budget.in_flight == 0

        with grpc.insecure_channel(server.address, options=CLIENT_OPTIONS) as channel:
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            error = refused(
                stub, "PredictTails", pb.PredictRequest(queries=[query(served.entities[i]) for i in range(50)], k=1000)
            )
            assert error.code() == INVALID
            assert f"more than the {8 * 2**20:,}-byte response budget (--response-memory-mb" in error.details()


def test_no_room_in_the_budget_in_time_is_resource_exhausted(wide_bundle: Path) -> None:
    with running_server({"wide@champion": (wide_bundle, "wide/1")}, response_memory_mb=8) as server:
        served = server.holder.get()
        request = pb.PredictRequest(queries=[query(served.entities[i]) for i in range(40)], k=1000)
        with grpc.insecure_channel(server.address, options=CLIENT_OPTIONS) as channel:
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            # another answer holds the whole budget; the server gives up 0.5 s before the call's deadline
            with server.budget.reserve(server.budget.capacity), pytest.raises(grpc.RpcError) as raised:
                stub.PredictTails(request, timeout=2.0)
            error = raised.value
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--response-memory-mb" in error.details() and "try again later" in error.details()
            assert len(stub.PredictTails(request, timeout=60).results) == 40
