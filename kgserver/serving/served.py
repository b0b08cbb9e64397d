"""One model version ready to answer: embeddings computed, vocabularies indexed.

A :class:`ServedModel` is immutable once built. The holder swaps versions by
assigning a new one to a single attribute, so a request that fetched a version
keeps using it to the end even if a newer one is installed meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import torch
from torch import Tensor

from kgserver.errors import EntityNotEmbeddable, RelationNeedsRetraining, UnknownEntity, UnknownRelation
from kgserver.graph.index import TripleIndex
from kgserver.graph.vocabulary import Vocabulary
from kgserver.registry import KGModel


class LoadedModelLike(Protocol):
    """What serving needs of :class:`kgserver.tracking.bundle.LoadedModel`."""

    plugin: str
    model: KGModel
    entities: list[str]
    relations: list[str]
    train_triples: Tensor
    version: str
    graph_name: str
    graph_revision: int
    graph_created_at: str

    def encode(self) -> tuple[Tensor, Tensor]: ...


def scoring_layout(table: Tensor) -> Tensor:
    """``table`` (``[N, d]``) stored column-major: the same values, with ``table.t()`` contiguous.

    Every decoder scores queries against all entities as ``query @ tails.t()``. With the
    served table column-major that operand is a contiguous ``[d, N]`` matrix, which this
    project's CPU BLAS multiplies faster per query than the transposed view of a row-major
    table, most at small batches (bench/RESULTS.md, Serving). Gathering
    a few rows (query heads, embeddings answers) reads strided memory instead, a small cost
    beside the pass over all N rows. Returns ``table`` itself when it is laid out so already;
    otherwise the copy briefly holds the table twice, once per load or re-encode.
    """
    return table if table.t().is_contiguous() else table.t().contiguous().t()


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded model version with its encoder output cached and IRIs indexed.

    ``eq=False`` keeps identity semantics: the batching scorer groups queued
    requests by the exact version object they started with.
    """

    ref: str
    version: str
    plugin: str
    graph: str
    model: KGModel
    vocabulary: Vocabulary
    entity_emb: Tensor
    """``[N, d]``, always in :func:`scoring_layout` (a table given in another layout is copied into it)."""
    relation_emb: Tensor
    known: TripleIndex
    train_triples: Tensor
    """The message graph (int64 ``[n, 3]``), which explanations walk: the training triples,
    plus the triples the store added since when the server follows a store."""
    known_triples: Tensor
    """The triples ``known`` was built from (int64 ``[n, 3]``), so a store change can extend it."""
    trained_entities: int
    """How many entities the model was trained with: ids from here on are new entities."""
    store_revision: int = 0
    """The graph revision of the store state this was built from (0: no store)."""
    store_created_at: datetime | None = None
    """When the graph read at ``store_revision`` was created (None: no store); a graph
    deleted and imported again is another graph, whose revisions count afresh."""
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """``rdfs:label`` by IRI, then by lower-case language tag (``""``: untagged)."""
    language: str = ""
    """The label language answers get when a request names none."""
    unembeddable: frozenset[str] = frozenset()
    """Entities the store added that this model cannot embed (asking about them: NOT_FOUND, retrain)."""
    unseen_relations: frozenset[str] = frozenset()
    """Relations the store added that the model never saw (asking about them: NOT_FOUND, retrain)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "entity_emb", scoring_layout(self.entity_emb))

    @classmethod
    def build(
        cls,
        ref: str,
        loaded: LoadedModelLike,
        *,
        also_known: Tensor | None = None,
        store_revision: int = 0,
        store_created_at: datetime | None = None,
        labels: Mapping[str, Mapping[str, str]] | None = None,
        language: str = "",
    ) -> ServedModel:
        """Run the encoder once and index the vocabulary and the known triples.

        Known triples are the model's training triples plus ``also_known``
        (``[n, 3]`` ids of the model's vocabulary): whatever else the caller knows
        to be true, such as the graph's stored triples (see
        :func:`kgserver.serving.source.served_model`). This reads nothing itself.
        """
        with torch.inference_mode():
            entity_emb, relation_emb = loaded.encode()
        known = loaded.train_triples.long()
        if also_known is not None:
            known = torch.cat([known, also_known.long()])
        return cls(
            ref=ref,
            version=loaded.version,
            plugin=loaded.plugin,
            graph=loaded.graph_name,
            model=loaded.model,
            vocabulary=Vocabulary(loaded.entities, loaded.relations),
            entity_emb=entity_emb.detach(),
            relation_emb=relation_emb.detach().contiguous(),
            known=TripleIndex.build(known, len(loaded.relations)),
            train_triples=loaded.train_triples.to(torch.int64),
            known_triples=known,
            trained_entities=len(loaded.entities),
            store_revision=store_revision,
            store_created_at=store_created_at,
            labels=labels or {},
            language=language,
        )

    @property
    def entities(self) -> tuple[str, ...]:
        """Entity IRIs in id order."""
        return self.vocabulary.entities

    @property
    def num_entities(self) -> int:
        return self.vocabulary.num_entities

    @property
    def num_relations(self) -> int:
        return self.vocabulary.num_relations

    @property
    def embedding_dim(self) -> int:
        return int(self.entity_emb.shape[1])

    def entity_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`~kgserver.errors.UnknownEntity` names the first one not in
        the vocabulary (:class:`~kgserver.errors.EntityNotEmbeddable` when the store has it
        but this model cannot embed it)."""
        try:
            return self.vocabulary.entity_ids(iris)
        except UnknownEntity as error:
            if error.iri in self.unembeddable:
                raise EntityNotEmbeddable(error.iri) from None
            raise

    def relation_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`~kgserver.errors.UnknownRelation` names the first one not in
        the vocabulary (:class:`~kgserver.errors.RelationNeedsRetraining` when the store has it)."""
        try:
            return self.vocabulary.relation_ids(iris)
        except UnknownRelation as error:
            if error.iri in self.unseen_relations:
                raise RelationNeedsRetraining(error.iri) from None
            raise

    def is_new(self, entity_id: int) -> bool:
        """Whether the entity was not in the model's training vocabulary."""
        return entity_id >= self.trained_entities

    def label(self, iri: str, language: str = "") -> str:
        """The label of ``iri`` in ``language`` (or the server's default): that tag, else a
        tag of that language with a subtag (``en-GB`` for ``en``), else an untagged label; ``""`` if none."""
        by_language = self.labels.get(iri)
        if not by_language:
            return ""
        wanted = (language or self.language).lower()
        if wanted:
            if wanted in by_language:
                return by_language[wanted]
            subtagged = sorted(tag for tag in by_language if tag.startswith(wanted + "-"))
            if subtagged:
                return by_language[subtagged[0]]
        return by_language.get("", "")

    def info(self) -> dict[str, Any]:
        """A plain description (for ListModels and logs)."""
        return {
            "name": self.ref,
            "version": self.version,
            "plugin": self.plugin,
            "graph": self.graph,
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "embedding_dim": self.embedding_dim,
        }
