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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

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


class ScoredEntity(NamedTuple):
    entity: str
    score: float


@dataclass(frozen=True)
class Predictions:
    """One list of answers per query, best first, and the model version that answered."""

    results: list[list[ScoredEntity]]
    model_version: str


@dataclass(frozen=True)
class Scores:
    scores: list[float]
    model_version: str


@dataclass(frozen=True)
class Embeddings:
    """Vectors in request order, and the model version they come from."""

    entities: list[str]
    vectors: list[list[float]]
    model_version: str


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

    def __enter__(self) -> "KGClient":
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
        self, queries: Sequence[tuple[str, str]], k: int = 10, *, filter_known: bool = False, model: str = ""
    ) -> Predictions:
        """Complete each ``(head, relation, ?)``."""
        return self._predict(self._stub.PredictTails, queries, k, filter_known, model)

    def predict_heads(
        self, queries: Sequence[tuple[str, str]], k: int = 10, *, filter_known: bool = False, model: str = ""
    ) -> Predictions:
        """Complete each ``(?, relation, tail)``; a query is ``(tail, relation)``."""
        return self._predict(self._stub.PredictHeads, queries, k, filter_known, model)

    def _predict(
        self,
        method: Callable[..., Any],
        queries: Sequence[tuple[str, str]],
        k: int,
        filter_known: bool,
        model: str,
    ) -> Predictions:
        request = pb.PredictRequest(
            model=model,
            queries=[pb.Query(entity=entity, relation=relation) for entity, relation in queries],
            k=k,
            filter_known=filter_known,
        )
        response = self._call(method, request)
        results = [
            [ScoredEntity(answer.entity, answer.score) for answer in predictions.entities]
            for predictions in response.results
        ]
        return Predictions(results, response.model_version)

    def score(self, triples: Sequence[tuple[str, str, str]], *, model: str = "") -> Scores:
        """The model's plausibility of each ``(head, relation, tail)``."""
        request = pb.ScoreTriplesRequest(
            model=model, triples=[pb.Triple(head=h, relation=r, tail=t) for h, r, t in triples]
        )
        response = self._call(self._stub.ScoreTriples, request)
        return Scores(list(response.scores), response.model_version)

    def embeddings(self, entities: Sequence[str], *, model: str = "") -> Embeddings:
        """The encoder's embedding of each entity."""
        request = pb.GetEntityEmbeddingsRequest(model=model, entities=list(entities))
        response = self._call(self._stub.GetEntityEmbeddings, request)
        return Embeddings(
            [e.entity for e in response.embeddings],
            [list(e.values) for e in response.embeddings],
            response.model_version,
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
