"""A real server on loopback answers exactly what the in-process model computes."""

from __future__ import annotations

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kgserver.client import KGClient, RequestFailed
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.server import KGServer
from kgserver.tracking.bundle import LoadedModel

from .helpers import NUM_ENTITIES, NUM_RELATIONS, bundle_source, entity, relation

QUERIES = [(0, 0), (5, 1), (17, 2), (33, 3), (59, 0), (42, 3)]


def in_process_topk(reference: LoadedModel, ids: list[tuple[int, int]], k: int, inverse: bool):
    entity_emb, relation_emb = reference.encode()
    entities = torch.tensor([e for e, _ in ids])
    relations = torch.tensor([r + (NUM_RELATIONS if inverse else 0) for _, r in ids])
    with torch.no_grad():
        scores = reference.model.score(entity_emb[entities], relation_emb[relations], entity_emb)
    return torch.topk(scores, k, dim=1)


@pytest.mark.parametrize("inverse", [False, True], ids=["tails", "heads"])
def test_predictions_equal_the_in_process_top_k(server: KGServer, reference: LoadedModel, inverse: bool) -> None:
    with KGClient(server.address) as client:
        predict = client.predict_heads if inverse else client.predict_tails
        answer = predict([(entity(e), relation(r)) for e, r in QUERIES], k=10)
    expected = in_process_topk(reference, QUERIES, 10, inverse)
    assert answer.model_version == "toy/1"
    assert len(answer.results) == len(QUERIES)
    for row, results in enumerate(answer.results):
        assert [r.entity for r in results] == [entity(i) for i in expected.indices[row].tolist()]
        assert [r.score for r in results] == pytest.approx(expected.values[row].tolist(), abs=1e-5)


def test_concurrent_requests_get_their_own_answers(server: KGServer, reference: LoadedModel) -> None:
    """Requests coalesced into one batch are split back to the right callers."""
    from concurrent.futures import ThreadPoolExecutor

    pairs = [(e, r) for e in range(0, NUM_ENTITIES, 3) for r in range(NUM_RELATIONS)]
    expected = in_process_topk(reference, pairs, 5, inverse=False).indices.tolist()
    with KGClient(server.address) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda p: client.predict_tails([(entity(p[0]), relation(p[1]))], k=5), pairs))
    assert [[r.entity for r in a.results[0]] for a in answers] == [[entity(i) for i in row] for row in expected]


@pytest.mark.parametrize("inverse", [False, True], ids=["tails", "heads"])
def test_filter_known_removes_exactly_the_known_triples(
    server: KGServer, reference: LoadedModel, inverse: bool
) -> None:
    train = reference.train_triples.tolist()
    known: dict[tuple[int, int], set[int]] = {}
    for h, r, t in train:
        key, answer = ((t, r), h) if inverse else ((h, r), t)
        known.setdefault(key, set()).add(answer)
    queries = [key for key in sorted(known) if len(known[key]) > 1][:5] + [(3, 3)]
    with KGClient(server.address) as client:
        predict = client.predict_heads if inverse else client.predict_tails
        every = predict([(entity(e), relation(r)) for e, r in queries], k=NUM_ENTITIES, filter_known=False)
        filtered = predict([(entity(e), relation(r)) for e, r in queries], k=NUM_ENTITIES, filter_known=True)
        assert len(known[queries[0]]) > 1
    for query, all_results, kept in zip(queries, every.results, filtered.results):
        removed = {entity(i) for i in known.get(query, set())}
        assert len(all_results) == NUM_ENTITIES
        expected = [r for r in all_results if r.entity not in removed]
        assert [r.entity for r in kept] == [r.entity for r in expected]
        assert [r.score for r in kept] == pytest.approx([r.score for r in expected], abs=1e-5)


def test_filter_known_keeps_k_answers_when_enough_remain(server: KGServer, reference: LoadedModel) -> None:
    h, r, _ = reference.train_triples[0].tolist()
    with KGClient(server.address) as client:
        answer = client.predict_tails([(entity(h), relation(r))], k=10, filter_known=True)
    known_tails = {t for hh, rr, t in reference.train_triples.tolist() if (hh, rr) == (h, r)}
    assert len(answer.results[0]) == 10
    assert not {x.entity for x in answer.results[0]} & {entity(t) for t in known_tails}


def test_scores_equal_the_in_process_decoder(server: KGServer, reference: LoadedModel) -> None:
    triples = [(0, 0, 1), (5, 1, 38), (9, 3, 9), (59, 2, 4)]
    entity_emb, relation_emb = reference.encode()
    with torch.no_grad():
        expected = [
            reference.model.score(entity_emb[[h]], relation_emb[[r]], entity_emb[[t]]).item() for h, r, t in triples
        ]
    with KGClient(server.address) as client:
        answer = client.score([(entity(h), relation(r), entity(t)) for h, r, t in triples])
    assert answer.scores == pytest.approx(expected, abs=1e-5)
    assert answer.model_version == "toy/1"


def test_embeddings_equal_the_encoder_output(server: KGServer, reference: LoadedModel) -> None:
    ids = [4, 0, 59, 4]
    with KGClient(server.address) as client:
        answer = client.embeddings([entity(i) for i in ids])
    entity_emb, _ = reference.encode()
    assert answer.entities == [entity(i) for i in ids]
    assert torch.tensor(answer.vectors) == pytest.approx(entity_emb[ids], abs=1e-6)
    assert answer.model_version == "toy/1"


def test_list_models_describes_what_is_served(server: KGServer) -> None:
    with KGClient(server.address) as client:
        listing = client.list_models()
    assert listing.max_k == 60 and listing.max_batch == 16
    [info] = listing.models
    assert (info.name, info.version, info.plugin, info.graph) == ("toy@champion", "toy/1", "compgcn", "toy")
    assert (info.num_entities, info.num_relations, info.embedding_dim, info.is_default) == (60, 4, 32, True)


def test_the_model_is_chosen_by_reference_or_version(server: KGServer) -> None:
    with KGClient(server.address) as client:
        for name in ("toy@champion", "toy/1", ""):
            assert client.predict_tails([(entity(0), relation(0))], k=1, model=name).model_version == "toy/1"


GOOD = pb.Query(entity=entity(1), relation=relation(1))
NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
ERROR_CASES = [
    (
        "PredictTails",
        pb.PredictRequest(queries=[pb.Query(entity="http://nowhere/x", relation=relation(1))], k=3),
        NOT_FOUND,
        "http://nowhere/x",
    ),
    (
        "PredictHeads",
        pb.PredictRequest(queries=[GOOD, pb.Query(entity=entity(1), relation="http://nowhere/r")], k=3),
        NOT_FOUND,
        "http://nowhere/r",
    ),
    ("PredictTails", pb.PredictRequest(queries=[GOOD], k=0), INVALID, "k must be"),
    ("PredictTails", pb.PredictRequest(queries=[GOOD], k=-5), INVALID, "k must be"),
    ("PredictHeads", pb.PredictRequest(queries=[GOOD], k=61), INVALID, "k must be"),
    ("PredictTails", pb.PredictRequest(queries=[], k=3), INVALID, "got 0"),
    ("PredictTails", pb.PredictRequest(queries=[GOOD] * 17, k=3), INVALID, "got 17"),
    ("PredictTails", pb.PredictRequest(model="toy@nope", queries=[GOOD], k=3), NOT_FOUND, "toy@nope"),
    (
        "ScoreTriples",
        pb.ScoreTriplesRequest(triples=[pb.Triple(head=entity(1), relation=relation(1), tail="urn:x:gone")]),
        NOT_FOUND,
        "urn:x:gone",
    ),
    ("ScoreTriples", pb.ScoreTriplesRequest(triples=[]), INVALID, "got 0"),
    (
        "ScoreTriples",
        pb.ScoreTriplesRequest(
            model="other/3", triples=[pb.Triple(head=entity(1), relation=relation(1), tail=entity(2))]
        ),
        NOT_FOUND,
        "other/3",
    ),
    ("GetEntityEmbeddings", pb.GetEntityEmbeddingsRequest(entities=[entity(1), "_:b0"]), NOT_FOUND, "_:b0"),
    ("GetEntityEmbeddings", pb.GetEntityEmbeddingsRequest(entities=[entity(1)] * 17), INVALID, "got 17"),
    ("GetEntityEmbeddings", pb.GetEntityEmbeddingsRequest(entities=[]), INVALID, "got 0"),
]


@pytest.mark.parametrize("method, request_, code, mentions", ERROR_CASES)
def test_bad_requests_get_their_status_code(
    channel: grpc.Channel, method: str, request_: object, code: grpc.StatusCode, mentions: str
) -> None:
    stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request_, timeout=10)
    assert raised.value.code() == code
    assert mentions in raised.value.details()
    assert "Traceback" not in raised.value.details()


def test_undecodable_requests_are_invalid_arguments(channel: grpc.Channel, server: KGServer) -> None:
    call = channel.unary_unary("/kgserver.v1.KnowledgeGraphCompletion/PredictTails")
    with pytest.raises(grpc.RpcError) as raised:
        call(b"\xff\xfe not a protobuf \x00\x01", timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid kgserver.v1.PredictRequest" in raised.value.details()
    with KGClient(server.address) as client:
        assert client.predict_tails([(entity(1), relation(1))], k=2).model_version == "toy/1"


def test_client_raises_request_failed_with_the_code(server: KGServer) -> None:
    with KGClient(server.address) as client, pytest.raises(RequestFailed) as raised:
        client.predict_tails([("http://nowhere/x", relation(0))])
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    assert "http://nowhere/x" in str(raised.value)


def test_health_goes_serving_once_the_model_is_loaded(bundle_dir) -> None:  # type: ignore[no-untyped-def]
    from kgserver.serving.server import ServeConfig

    resolve, build = bundle_source({"toy@champion": (bundle_dir, "toy/1")})
    server = KGServer(ServeConfig(models=["toy@champion"], port=0), resolve, build)
    server.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            with pytest.raises(grpc.RpcError) as raised:
                stub.PredictTails(pb.PredictRequest(queries=[GOOD], k=1), timeout=10)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            server.load()
            for service in ("", "kgserver.v1.KnowledgeGraphCompletion"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=1)


def test_reflection_lists_the_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert {"kgserver.v1.KnowledgeGraphCompletion", "grpc.health.v1.Health"} <= names


def test_several_models_are_served_side_by_side(bundle_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from kgserver.tracking.bundle import save_bundle

    from .helpers import make_snapshot, running_server, train_model

    other_snapshot = make_snapshot(name="other", seed=5)
    other = save_bundle(tmp_path / "other", train_model(other_snapshot, seed=5, epochs=1), other_snapshot)
    bundles = {"toy@champion": (bundle_dir, "toy/1"), "other@champion": (other, "other/4")}
    with running_server(bundles) as server, KGClient(server.address) as client:
        listing = client.list_models()
        assert [(m.name, m.version, m.is_default, m.graph) for m in listing.models] == [
            ("toy@champion", "toy/1", True, "toy"),
            ("other@champion", "other/4", False, "other"),
        ]
        query = [(entity(1), relation(1))]
        assert client.predict_tails(query, k=3).model_version == "toy/1"
        assert client.predict_tails(query, k=3, model="other@champion").model_version == "other/4"
        assert client.predict_heads(query, k=3, model="other/4").model_version == "other/4"
        assert client.embeddings([entity(2)], model="other@champion").model_version == "other/4"
