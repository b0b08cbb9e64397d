"""ExplainPrediction's work: one :class:`~kgserver.explain.Explainer` per served version.

An explainer holds the message graph of its version, so it is built on the first
explanation a version is asked for and dropped with the version (the cache holds
versions weakly). It scores and ranks with the version's cached embeddings and
its known triples (the same filter as ``filter_known`` predictions), so the
explanation's score is the one ``ScoreTriples`` answers.
"""

from __future__ import annotations

import threading
import weakref

from kgserver.explain import Explainer, Explanation
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.serving.served import ServedModel

_explainers: weakref.WeakKeyDictionary[ServedModel, Explainer] = weakref.WeakKeyDictionary()
_building = threading.Lock()


def explainer_of(served: ServedModel) -> Explainer:
    """The explainer of ``served``, built once."""
    with _building:
        explainer = _explainers.get(served)
        if explainer is None:
            explainer = Explainer(
                served.model,
                served.train_triples,
                embeddings=(served.entity_emb, served.relation_emb),
                known=served.known,
            )
            _explainers[served] = explainer
        return explainer


def explain(served: ServedModel, head: str, relation: str, tail: str, k: int) -> Explanation:
    """Explain ``tail`` as an answer to ``(head, relation, ?)``, named by IRIs
    (:class:`~kgserver.errors.UnknownEntity`/``UnknownRelation`` name an unknown one)."""
    head_id, tail_id = served.entity_ids([head, tail])
    (relation_id,) = served.relation_ids([relation])
    return explainer_of(served).explain(head_id, relation_id, tail_id, k)


def response(served: ServedModel, explanation: Explanation) -> pb.ExplainResponse:
    """The ExplainResponse of ``explanation``, with IRIs; labels stay empty (served models carry none)."""
    entities, relations = served.vocabulary.entities, served.vocabulary.relations

    def triple(head: int, relation: int, tail: int) -> pb.Triple:
        return pb.Triple(head=entities[head], relation=relations[relation], tail=entities[tail])

    return pb.ExplainResponse(
        score=explanation.score,
        rank=explanation.rank,
        evidence=[
            pb.Evidence(triple=triple(*item.triple), weight=item.weight, attention=item.attention)
            for item in explanation.evidence
        ],
        paths=[
            pb.EvidencePath(hops=[triple(*hop) for hop in path.hops], weight=path.weight)
            for path in explanation.paths
        ],
        model_version=served.version,
        store_revision=served.store_revision,
        method=explanation.method,
    )
