"""A synchronous Python client of a kgserver gRPC server.

    with KGClient("127.0.0.1:50051") as client:
        answer = client.predict_tails([("http://ex/alice", "http://ex/knows")], k=5)
        for entity, score in answer.results[0]:
            ...

Failed calls raise :class:`RequestFailed` with the gRPC status code and the
server's message (e.g. ``NOT_FOUND`` naming the unknown IRI). Imports only grpc
and the generated stubs, so it is cheap to use from any application.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc

from kgserver.errors import KGServerError
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RequestFailed(KGServerError):
    """The server answered a call with an error status (or could not be reached)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


class _EntityScore(NamedTuple):
    entity: str
    score: float


class ScoredEntity(_EntityScore):
    """An answer: unpacks (and compares) as the pair ``(entity, score)``, and carries
    ``label`` (rdfs:label from the server's store, "" if none) and ``new_entity`` (not in
    the model's training vocabulary: embedded from its neighbourhood in the store)."""

    label: str
    new_entity: bool

    def __new__(cls, entity: str, score: float, label: str = "", new_entity: bool = False) -> ScoredEntity:
        answer = super().__new__(cls, entity, score)
        answer.label = label
        answer.new_entity = new_entity
        return answer


@dataclass(frozen=True)
class Predictions:
    """One list of answers per query, best first, and the model version that answered."""

    results: list[list[ScoredEntity]]
    model_version: str
    store_revision: int = 0
    """The store's graph revision that answered (0: the server has no store)."""


@dataclass(frozen=True)
class Scores:
    scores: list[float]
    model_version: str
    store_revision: int = 0


@dataclass(frozen=True)
class Embeddings:
    """Vectors in request order, and the model version they come from."""

    entities: list[str]
    vectors: list[list[float]]
    model_version: str
    store_revision: int = 0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    plugin: str
    graph: str
    num_entities: int
    num_relations: int
    embedding_dim: int
    is_default: bool


@dataclass(frozen=True)
class ServerModels:
    models: list[ModelInfo]
    max_k: int
    max_batch: int


class KGClient:
    """Calls to one server over one channel; optionally TLS and a bearer token.

    ``root_certificates`` (PEM bytes or a file path) implies TLS; ``tls=True`` alone
    trusts the system's roots. ``token`` is sent as ``authorization: Bearer <token>``.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        tls: bool = False,
        root_certificates: bytes | str | Path | None = None,
        token: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if isinstance(root_certificates, (str, Path)):
            root_certificates = Path(root_certificates).read_bytes()
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stub = pb_grpc.KnowledgeGraphCompletionStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout = timeout

    def __enter__(self) -> KGClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise RequestFailed(error.code(), error.details() or "") from None

    def predict_tails(
        self,
        queries: Sequence[tuple[str, str]],
        k: int = 10,
        *,
        filter_known: bool = False,
        model: str = "",
        language: str = "",
    ) -> Predictions:
        """Complete each ``(head, relation, ?)``; labels in ``language`` ("": the server's default)."""
        return self._predict(self._stub.PredictTails, queries, k, filter_known, model, language)

    def predict_heads(
        self,
        queries: Sequence[tuple[str, str]],
        k: int = 10,
        *,
        filter_known: bool = False,
        model: str = "",
        language: str = "",
    ) -> Predictions:
        """Complete each ``(?, relation, tail)``; a query is ``(tail, relation)``."""
        return self._predict(self._stub.PredictHeads, queries, k, filter_known, model, language)

    def _predict(
        self,
        method: Callable[..., Any],
        queries: Sequence[tuple[str, str]],
        k: int,
        filter_known: bool,
        model: str,
        language: str,
    ) -> Predictions:
        request = pb.PredictRequest(
            model=model,
            queries=[pb.Query(entity=entity, relation=relation) for entity, relation in queries],
            k=k,
            filter_known=filter_known,
            language=language,
        )
        response = self._call(method, request)
        results = [
            [ScoredEntity(a.entity, a.score, a.label, a.new_entity) for a in predictions.entities]
            for predictions in response.results
        ]
        return Predictions(results, response.model_version, response.store_revision)

    def score(self, triples: Sequence[tuple[str, str, str]], *, model: str = "") -> Scores:
        """The model's plausibility of each ``(head, relation, tail)``."""
        request = pb.ScoreTriplesRequest(
            model=model, triples=[pb.Triple(head=h, relation=r, tail=t) for h, r, t in triples]
        )
        response = self._call(self._stub.ScoreTriples, request)
        return Scores(list(response.scores), response.model_version, response.store_revision)

    def embeddings(self, entities: Sequence[str], *, model: str = "") -> Embeddings:
        """The encoder's embedding of each entity."""
        request = pb.GetEntityEmbeddingsRequest(model=model, entities=list(entities))
        response = self._call(self._stub.GetEntityEmbeddings, request)
        return Embeddings(
            [e.entity for e in response.embeddings],
            [list(e.values) for e in response.embeddings],
            response.model_version,
            response.store_revision,
        )

    def health(self, wait: float = 0.0) -> str:
        """The standard health service's status of the whole server: ``"SERVING"``, ``"NOT_SERVING"``,
        or ``"UNREACHABLE"``; with ``wait``, asks again (up to ``wait`` seconds) until SERVING."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self._channel)
        deadline = time.monotonic() + wait
        while True:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=self.timeout, metadata=self._metadata)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise RequestFailed(error.code(), error.details() or "") from None
                status = "UNREACHABLE"
            if status == "SERVING" or time.monotonic() >= deadline:
                return status
            time.sleep(0.5)

    def list_models(self) -> ServerModels:
        """The models the server answers for, and its limits."""
        response = self._call(self._stub.ListModels, pb.ListModelsRequest())
        models = [
            ModelInfo(
                name=m.name,
                version=m.version,
                plugin=m.plugin,
                graph=m.graph,
                num_entities=m.num_entities,
                num_relations=m.num_relations,
                embedding_dim=m.embedding_dim,
                is_default=m.is_default,
            )
            for m in response.models
        ]
        return ServerModels(models, response.max_k, response.max_batch)

    def explain(
        self, head: str, relation: str, tail: str, k: int = 10, *, model: str = "", language: str = ""
    ) -> PredictionExplanation:
        """Why ``tail`` answers ``(head, relation, ?)``: score, filtered rank, the ``k`` training
        triples the prediction depends on most and the paths they form from head to tail."""
        request = pb.ExplainRequest(
            model=model, triple=pb.Triple(head=head, relation=relation, tail=tail), k=k, language=language
        )
        response = self._call(self._stub.ExplainPrediction, request)
        return PredictionExplanation(
            score=response.score,
            rank=response.rank,
            evidence=[
                EvidenceTriple(
                    triple=_triple(item.triple),
                    weight=item.weight,
                    labels=(item.head_label, item.relation_label, item.tail_label),
                    attention=list(item.attention),
                )
                for item in response.evidence
            ],
            paths=[EvidenceChain([_triple(hop) for hop in path.hops], path.weight) for path in response.paths],
            model_version=response.model_version,
            store_revision=response.store_revision,
            method=response.method,
        )


def _triple(message: pb.Triple) -> tuple[str, str, str]:
    return (message.head, message.relation, message.tail)


@dataclass(frozen=True)
class EvidenceTriple:
    """A training triple a prediction depends on; ``labels`` are empty when the model has none."""

    triple: tuple[str, str, str]
    weight: float
    labels: tuple[str, str, str]
    attention: list[float]


@dataclass(frozen=True)
class EvidenceChain:
    """Triples leading from the head to the tail (a hop may be walked backwards); ``weight`` is their smallest."""

    hops: list[tuple[str, str, str]]
    weight: float


@dataclass(frozen=True)
class PredictionExplanation:
    """The answer of ExplainPrediction: evidence heaviest first, paths best first."""

    score: float
    rank: int
    evidence: list[EvidenceTriple]
    paths: list[EvidenceChain]
    model_version: str
    store_revision: int
    method: str
