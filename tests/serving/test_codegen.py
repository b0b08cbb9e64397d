"""The committed gRPC stubs must be what grpc_tools.protoc makes of the .proto today."""

from __future__ import annotations

from kgserver.serving import codegen


def test_committed_stubs_match_the_proto() -> None:
    assert codegen.stale_files() == [], "run: python -m kgserver.serving.codegen"


def test_generated_module_exposes_the_contract() -> None:
    from kgserver.proto.v1 import kgserver_pb2, kgserver_pb2_grpc

    service = kgserver_pb2.DESCRIPTOR.services_by_name["KnowledgeGraphCompletion"]
    assert service.full_name == "kgserver.v1.KnowledgeGraphCompletion"
    assert {m.name for m in service.methods} >= {
        "PredictTails", "PredictHeads", "ScoreTriples", "GetEntityEmbeddings", "ListModels"
    }
    fields = {f.name: f.number for f in kgserver_pb2.PredictRequest.DESCRIPTOR.fields}
    # The original fields keep their numbers; live knowledge added language = 5.
    assert fields == {"model": 1, "queries": 2, "k": 3, "filter_known": 4, "language": 5}
    scored = {f.name: f.number for f in kgserver_pb2.ScoredEntity.DESCRIPTOR.fields}
    assert scored == {"entity": 1, "score": 2, "label": 3, "new_entity": 4}
    for response in (
        kgserver_pb2.PredictResponse, kgserver_pb2.ScoreTriplesResponse, kgserver_pb2.GetEntityEmbeddingsResponse
    ):
        numbers = {f.name: f.number for f in response.DESCRIPTOR.fields}
        assert numbers["model_version"] == 2 and numbers["store_revision"] == 3
    assert hasattr(kgserver_pb2_grpc, "KnowledgeGraphCompletionStub")
