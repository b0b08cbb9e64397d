"""The gRPC servicer of ``kgserver.v1.KnowledgeGraphCompletion``: validate, delegate, translate.

All computing happens in the holder's :class:`ServedModel` and the batching
scorer; this module checks request limits, turns IRIs into ids and results into
messages, and maps typed errors to status codes in one place (:func:`_status_of`).
A client never sees a stack trace: anything unexpected is logged here and
answered with ``INTERNAL``.

A request is checked in a fixed order, and the first fault found answers it:

1. its shape: ``k`` in ``1..max_k``, ``1..max_batch`` items, no IRI longer than
   :data:`MAX_IRI_CHARS` (``INVALID_ARGUMENT``);
2. the model it names (``NOT_FOUND``);
3. its IRIs, entities before relations, in request order (``NOT_FOUND`` naming the first unknown);
4. the worst-case size of its answer against the response budget
   (``INVALID_ARGUMENT`` naming the budget when it can never fit,
   ``RESOURCE_EXHAUSTED`` when no room is made in time; see :mod:`.budget`).

Status messages quote request-supplied strings (IRIs, model names) only through
:func:`quote`, which keeps at most :data:`MAX_QUOTED_CHARS` characters of them:
a status message travels in HTTP/2 trailers, which clients cap at a few KiB, so
an echoed megabyte IRI would turn the status into a transport error.

Requests arrive as raw bytes and are parsed here rather than by grpc: bytes that
are not a valid message are then an ``INVALID_ARGUMENT`` like any other bad
input, and grpc's own failure path for undecodable requests (which answers
``INTERNAL`` and, in grpcio 1.85, keeps memory from every such call) is never
taken. Responses leave as bytes serialized here, inside the response
budget's reservation, so the budget covers the whole life of a large answer on
the server's side.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence, Sized
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from kgserver.errors import (
    EntityNotEmbeddable,
    ExplanationUnavailable,
    ModelNotServed,
    RelationNeedsRetraining,
    ResponseTooLarge,
    ServerBusy,
    UnknownEntity,
    UnknownRelation,
)
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving import explaining
from kgserver.serving.budget import ResponseBudget
from kgserver.serving.holder import ModelHolder, ModelsNotReady
from kgserver.serving.scorer import BatchScorer, ScorerClosed
from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["KnowledgeGraphCompletion"].full_name

MAX_IRI_CHARS = 4096
"""Longest IRI (in characters) a request may hold; a longer one is ``INVALID_ARGUMENT``."""

MAX_QUOTED_CHARS = 120
"""Most characters of a request-supplied string (IRI, model name) that a status message quotes."""

WARM_QUERIES = 64
"""Queries of the largest warm-up request (see :meth:`KnowledgeGraphCompletion.warm`); with 1 and 8 the
sizes of batches that concurrent single-query clients form."""
WARM_K = 10
"""``k`` of the warm-up predictions (cut to ``max_k`` and the number of entities)."""


class InvalidRequest(ValueError):
    """A request breaks a documented limit (answered with INVALID_ARGUMENT)."""


def quote(text: str) -> str:
    """``text`` as a Python literal, cut to its first :data:`MAX_QUOTED_CHARS` characters.

    A cut literal is followed by ``...`` and the full length, so the reader knows
    it is a prefix. Control and unprintable characters are escaped (at most ten
    characters each), so the result is one line of at most about 1.3 KB.
    """
    if len(text) <= MAX_QUOTED_CHARS:
        return repr(text)
    return f"{text[:MAX_QUOTED_CHARS]!r}... ({len(text):,} characters)"


Method = Callable[[Any, Any, grpc.ServicerContext], bytes]


def _rpc(request_class: type[Message]) -> Callable[[Method], Method]:
    """Parse the raw request, run the method, and translate its errors into status codes."""

    def decorate(method: Method) -> Method:
        @functools.wraps(method)
        def wrapper(self: Any, raw: bytes, context: grpc.ServicerContext) -> Any:  # bytes; abort raises
            try:
                return method(self, _parse(request_class, raw), context)
            except Exception as error:
                code, message = _status_of(error, method.__name__)
            context.abort(code, message)

        return wrapper

    return decorate


def _parse(request_class: type[Message], raw: bytes) -> Any:
    try:
        return request_class.FromString(raw)
    except DecodeError:
        raise InvalidRequest(f"the request is not a valid {request_class.DESCRIPTOR.full_name}") from None


def _status_of(error: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The one translation of errors into ``(status code, message)`` for every method.

    Typed errors get their code and a message quoting request-supplied strings
    through :func:`quote`; budget refusals are also logged (one line, no request
    strings); anything else is logged with its traceback and answered with a bare
    INTERNAL.
    """
    match error:
        case InvalidRequest():
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        case EntityNotEmbeddable(iri=iri):
            return grpc.StatusCode.NOT_FOUND, (
                f"entity {quote(iri)} was added to the store after training and is not embeddable "
                "by this model; retrain"
            )
        case RelationNeedsRetraining(iri=iri):
            return grpc.StatusCode.NOT_FOUND, (
                f"relation {quote(iri)} was added to the store after training; retraining is needed to use it"
            )
        case UnknownEntity(iri=iri):
            return grpc.StatusCode.NOT_FOUND, f"unknown entity: {quote(iri)}"
        case UnknownRelation(iri=iri):
            return grpc.StatusCode.NOT_FOUND, f"unknown relation: {quote(iri)}"
        case ModelNotServed(name=name, serving=serving):
            return grpc.StatusCode.NOT_FOUND, f"model {quote(name)} is not served here; serving: {', '.join(serving)}"
        case ResponseTooLarge():
            log.warning("%s refused: %s", method, error)
            return grpc.StatusCode.INVALID_ARGUMENT, str(error)
        case ServerBusy():
            log.warning("%s refused: %s", method, error)
            return grpc.StatusCode.RESOURCE_EXHAUSTED, str(error)
        case ModelsNotReady() | ScorerClosed():
            return grpc.StatusCode.UNAVAILABLE, str(error)
        case ExplanationUnavailable():
            return grpc.StatusCode.FAILED_PRECONDITION, str(error)
    log.error("%s failed", method, exc_info=error)
    return grpc.StatusCode.INTERNAL, "internal error; see the server log"


def _check_iris(iris: Sequence[str], items: str, suffix: str = "") -> None:
    """Refuse an IRI longer than :data:`MAX_IRI_CHARS`, naming its field (``queries[3].entity``).

    The message quotes the IRI's start.
    """
    for position, iri in enumerate(iris):
        if len(iri) > MAX_IRI_CHARS:
            raise InvalidRequest(
                f"{items}[{position}]{suffix} is {len(iri):,} characters long; an IRI may have at most "
                f"{MAX_IRI_CHARS:,}: {quote(iri)}"
            )


def _embeddings(served: ServedModel, iris: list[str], ids: list[int]) -> bytes:
    """The serialized answer; its intermediate lists and messages are freed when this returns."""
    rows = served.entity_emb[ids].tolist()
    embeddings = [pb.Embedding(entity=iri, values=row) for iri, row in zip(iris, rows)]
    return pb.GetEntityEmbeddingsResponse(
        embeddings=embeddings, model_version=served.version, store_revision=served.store_revision
    ).SerializeToString()


class KnowledgeGraphCompletion(pb_grpc.KnowledgeGraphCompletionServicer):
    """Link prediction, triple scores and embeddings from the holder's current versions."""

    def __init__(
        self, holder: ModelHolder, scorer: BatchScorer, budget: ResponseBudget, *, max_k: int, max_batch: int
    ) -> None:
        self.holder = holder
        self.scorer = scorer
        self.budget = budget
        self.max_k = max_k
        self.max_batch = max_batch

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        """Handlers of every RPC of the service, taking and returning raw bytes (see the module doc)."""
        service = pb.DESCRIPTOR.services_by_name["KnowledgeGraphCompletion"]
        return {
            method.name: grpc.unary_unary_rpc_method_handler(
                getattr(self, method.name), request_deserializer=None, response_serializer=None
            )
            for method in service.methods
        }

    @_rpc(pb.PredictRequest)
    def PredictTails(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> bytes:
        return self._predict(request, context, inverse=False)

    @_rpc(pb.PredictRequest)
    def PredictHeads(self, request: pb.PredictRequest, context: grpc.ServicerContext) -> bytes:
        return self._predict(request, context, inverse=True)

    @_rpc(pb.ScoreTriplesRequest)
    def ScoreTriples(self, request: pb.ScoreTriplesRequest, context: grpc.ServicerContext) -> bytes:
        triples = request.triples
        self._check_batch(triples, "triples")
        for field in ("head", "relation", "tail"):
            _check_iris([getattr(t, field) for t in triples], "triples", f".{field}")
        served = self.holder.get(request.model)
        heads = served.entity_ids([t.head for t in triples])
        tails = served.entity_ids([t.tail for t in triples])
        relations = served.relation_ids([t.relation for t in triples])
        with self.budget.reserve(self.budget.scores_bytes(served, len(triples)), context.time_remaining()):
            scores = self.scorer.score_triples(served, heads, relations, tails)
            return pb.ScoreTriplesResponse(
                scores=scores, model_version=served.version, store_revision=served.store_revision
            ).SerializeToString()

    @_rpc(pb.GetEntityEmbeddingsRequest)
    def GetEntityEmbeddings(self, request: pb.GetEntityEmbeddingsRequest, context: grpc.ServicerContext) -> bytes:
        iris = list(request.entities)
        self._check_batch(iris, "entities")
        _check_iris(iris, "entities")
        served = self.holder.get(request.model)
        ids = served.entity_ids(iris)
        with self.budget.reserve(self.budget.embeddings_bytes(served, iris), context.time_remaining()):
            return _embeddings(served, iris, ids)

    @_rpc(pb.ListModelsRequest)
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> bytes:
        models = [
            pb.ModelInfo(is_default=served.ref == self.holder.default_ref, **served.info())
            for served in self.holder.current()
        ]
        response = pb.ListModelsResponse(models=models, max_k=self.max_k, max_batch=self.max_batch)
        return response.SerializeToString()

    @_rpc(pb.ExplainRequest)
    def ExplainPrediction(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> bytes:
        if not 1 <= request.k <= self.max_k:
            raise InvalidRequest(f"k must be between 1 and {self.max_k}, got {request.k}")
        triple = request.triple
        for field in ("head", "relation", "tail"):
            _check_iris([getattr(triple, field)], "triple", f".{field}")
        served = self.holder.get(request.model)
        explanation = explaining.explain(served, triple.head, triple.relation, triple.tail, request.k)
        return explaining.response(served, explanation).SerializeToString()


    def warm(self, served: ServedModel) -> None:
        """Answer a few real requests with ``served`` before it is served, discarding the answers.

        Each goes the whole way a request goes after its IRIs are checked: IRI
        lookup, the batching scorer (with and without the known-triple filter, one
        query and several), score and triple scoring, embeddings, message building
        and serialization. A version's first requests otherwise pay for first-use
        costs (allocations of the score matrix and top-k buffers, lazy
        initialisation in torch and protobuf). Raises whatever those requests raise,
        so a version that cannot answer is never swapped in.
        """
        count = min(WARM_QUERIES, served.num_entities, self.max_batch)
        iris = list(served.entities[:count])
        entities = served.entity_ids(iris)
        relation_iris = [served.vocabulary.relations[i % served.num_relations] for i in range(count)]
        relations = served.relation_ids(relation_iris)
        inverse = [r + served.num_relations for r in relations]
        k = min(WARM_K, self.max_k, served.num_entities)
        for size in sorted({1, min(8, count), count}):
            for filter_known in (False, True):
                self._predictions(served, entities[:size], relations[:size], k, filter_known, "")
                self._predictions(served, entities[:size], inverse[:size], k, filter_known, "")
        scores = self.scorer.score_triples(served, entities, relations, entities[::-1])
        pb.ScoreTriplesResponse(scores=scores, model_version=served.version).SerializeToString()
        _embeddings(served, iris, entities)

    def _predict(self, request: pb.PredictRequest, context: grpc.ServicerContext, *, inverse: bool) -> bytes:
        if not 1 <= request.k <= self.max_k:
            raise InvalidRequest(f"k must be between 1 and {self.max_k}, got {request.k}")
        queries = request.queries
        self._check_batch(queries, "queries")
        _check_iris([q.entity for q in queries], "queries", ".entity")
        _check_iris([q.relation for q in queries], "queries", ".relation")
        served = self.holder.get(request.model)
        entities = served.entity_ids([q.entity for q in queries])
        relations = served.relation_ids([q.relation for q in queries])
        if inverse:
            relations = [r + served.num_relations for r in relations]
        bound = self.budget.predict_bytes(served, len(queries), request.k)
        with self.budget.reserve(bound, context.time_remaining()):
            return self._predictions(served, entities, relations, request.k, request.filter_known, request.language)

    def _predictions(
        self, served: ServedModel, entities: list[int], relations: list[int], k: int, filter_known: bool,
        language: str,
    ) -> bytes:
        """The serialized answer; its intermediate lists and messages are freed when this returns."""
        answers = self.scorer.predict(served, entities, relations, k, filter_known)
        names = served.entities

        def scored(i: int, score: float) -> pb.ScoredEntity:
            iri = names[i]
            return pb.ScoredEntity(
                entity=iri, score=score, label=served.label(iri, language), new_entity=served.is_new(i)
            )

        results = [pb.Predictions(entities=[scored(i, s) for i, s in zip(ids, scores)]) for ids, scores in answers]
        return pb.PredictResponse(
            results=results, model_version=served.version, store_revision=served.store_revision
        ).SerializeToString()

    def _check_batch(self, items: Sized, what: str) -> None:
        if not 1 <= len(items) <= self.max_batch:
            raise InvalidRequest(f"a request holds 1 to {self.max_batch} {what}, got {len(items)}")
