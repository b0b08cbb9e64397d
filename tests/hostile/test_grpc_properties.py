"""Property-based tests of the gRPC request validation, against a real server on a loopback port.

Hypothesis generates requests mixing known IRIs, unknown text, IRIs around the
length limit, k and batch sizes around their limits and across int32, and model
names; an oracle written from the documented check order (see the servicer's
module doc) says which status each must get and which string it must name.
Every error message must be short, quote its culprit and hold no traceback.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving.helpers import (
    NUM_ENTITIES,
    NUM_RELATIONS,
    entity,
    make_snapshot,
    random_bundle,
    relation,
    running_server,
)

from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.server import KGServer
from kgserver.serving.servicer import MAX_IRI_CHARS, quote

MAX_K, MAX_BATCH = 20, 6
MODELS = ("", "toy@champion", "toy/1")
ENTITIES = [entity(i) for i in range(NUM_ENTITIES)]
RELATIONS = [relation(i) for i in range(NUM_RELATIONS)]
MAX_DETAILS = 2048  # every message must stay far below the ~8 KiB a client accepts in trailers
OK, INVALID, NOT_FOUND = grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BOUNDED = settings(
    max_examples=35,
    deadline=datetime.timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

near_limit = st.integers(MAX_IRI_CHARS - 2, MAX_IRI_CHARS + 2).map(lambda n: "http://e.org/" + "x" * (n - 13))
repeated = st.tuples(st.text(min_size=1, max_size=3), st.integers(100, 3000)).map(lambda p: p[0] * p[1])
unknown = st.one_of(st.text(max_size=40), near_limit, repeated)
entity_iris = st.one_of(st.sampled_from(ENTITIES), st.sampled_from(ENTITIES), unknown)
relation_iris = st.one_of(st.sampled_from(RELATIONS), st.sampled_from(RELATIONS), unknown)
ks = st.one_of(st.integers(-2, MAX_K + 2), st.integers(-(2**31), 2**31 - 1))
models = st.one_of(st.sampled_from(MODELS), st.sampled_from(MODELS), st.text(max_size=30), repeated)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KGServer]:
    bundle: Path = random_bundle(tmp_path_factory.mktemp("toy") / "bundle", make_snapshot())
    with running_server({"toy@champion": (bundle, "toy/1")}, max_k=MAX_K, max_batch=MAX_BATCH) as running:
        yield running


@pytest.fixture(scope="module")
def channel(server: KGServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as opened:
        yield opened


def first_too_long(iris: list[str]) -> str | None:
    return next((iri for iri in iris if len(iri) > MAX_IRI_CHARS), None)


def expected_predict(model: str, pairs: list[tuple[str, str]], k: int) -> tuple[grpc.StatusCode, str]:
    """The status (and the text its message must hold) that the documented check order gives."""
    if not 1 <= k <= MAX_K:
        return INVALID, f"k must be between 1 and {MAX_K}, got {k}"
    if not 1 <= len(pairs) <= MAX_BATCH:
        return INVALID, f"got {len(pairs)}"
    for iris in ([e for e, _ in pairs], [r for _, r in pairs]):
        long_iri = first_too_long(iris)
        if long_iri is not None:
            return INVALID, quote(long_iri)
    if model not in MODELS:
        return NOT_FOUND, f"model {quote(model)} is not served here"
    unknown_entity = next((e for e, _ in pairs if e not in ENTITIES), None)
    if unknown_entity is not None:
        return NOT_FOUND, f"unknown entity: {quote(unknown_entity)}"
    unknown_relation = next((r for _, r in pairs if r not in RELATIONS), None)
    if unknown_relation is not None:
        return NOT_FOUND, f"unknown relation: {quote(unknown_relation)}"
    return OK, ""


def check_error(error: grpc.RpcError, code: grpc.StatusCode, mentions: str) -> None:
    details = error.details() or ""
    assert error.code() == code, details[:300]
    assert mentions in details
    assert len(details) <= MAX_DETAILS and "Traceback" not in details


@BOUNDED
@given(
    model=models,
    pairs=st.lists(st.tuples(entity_iris, relation_iris), max_size=MAX_BATCH + 2),
    k=ks,
    heads=st.booleans(),
    filter_known=st.booleans(),
)
def test_predictions_get_the_status_the_check_order_gives(
    channel: grpc.Channel, model: str, pairs: list[tuple[str, str]], k: int, heads: bool, filter_known: bool
) -> None:
    stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
    request = pb.PredictRequest(
        model=model, queries=[pb.Query(entity=e, relation=r) for e, r in pairs], k=k, filter_known=filter_known
    )
    code, mentions = expected_predict(model, pairs, k)
    predict = stub.PredictHeads if heads else stub.PredictTails
    if code == OK:
        answer = predict(request, timeout=30)
        assert len(answer.results) == len(pairs)
        assert all(len(r.entities) <= k for r in answer.results)
        if not filter_known:
            assert all(len(r.entities) == min(k, NUM_ENTITIES) for r in answer.results)
        return
    with pytest.raises(grpc.RpcError) as raised:
        predict(request, timeout=30)
    check_error(raised.value, code, mentions)


@BOUNDED
@given(model=models, iris=st.lists(entity_iris, max_size=MAX_BATCH + 2))
def test_embeddings_get_the_status_the_check_order_gives(channel: grpc.Channel, model: str, iris: list[str]) -> None:
    stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
    request = pb.GetEntityEmbeddingsRequest(model=model, entities=iris)
    long_iri = first_too_long(iris)
    unknown_entity = next((iri for iri in iris if iri not in ENTITIES), None)
    if not 1 <= len(iris) <= MAX_BATCH:
        code, mentions = INVALID, f"got {len(iris)}"
    elif long_iri is not None:
        code, mentions = INVALID, quote(long_iri)
    elif model not in MODELS:
        code, mentions = NOT_FOUND, quote(model)
    elif unknown_entity is not None:
        code, mentions = NOT_FOUND, f"unknown entity: {quote(unknown_entity)}"
    else:
        answer = stub.GetEntityEmbeddings(request, timeout=30)
        assert [e.entity for e in answer.embeddings] == iris
        return
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetEntityEmbeddings(request, timeout=30)
    check_error(raised.value, code, mentions)


@settings(max_examples=30, deadline=datetime.timedelta(seconds=10))
@given(raw=st.binary(max_size=300), method=st.sampled_from(["PredictTails", "ScoreTriples", "GetEntityEmbeddings"]))
def test_arbitrary_bytes_never_get_an_internal_error(channel: grpc.Channel, raw: bytes, method: str) -> None:
    call = channel.unary_unary(f"/kgserver.v1.KnowledgeGraphCompletion/{method}")
    try:
        call(raw, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in (INVALID, NOT_FOUND), error.details()
        assert len(error.details() or "") <= MAX_DETAILS and "Traceback" not in (error.details() or "")
