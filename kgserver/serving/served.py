"""One model version ready to answer: embeddings computed, vocabularies indexed.

A :class:`ServedModel` is immutable once built. The holder swaps versions by
assigning a new one to a single attribute, so a request that fetched a version
keeps using it to the end even if a newer one is installed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor

from kgserver.errors import ConfigurationError, UnknownEntity, UnknownRelation
from kgserver.registry import KGModel
from kgserver.serving.known import KnownTriples, stored_triples


class LoadedModelLike(Protocol):
    """What serving needs of :class:`kgserver.tracking.bundle.LoadedModel`."""

    plugin: str
    model: KGModel
    entities: list[str]
    relations: list[str]
    train_triples: Tensor
    version: str
    graph_name: str

    def encode(self) -> tuple[Tensor, Tensor]: ...


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
    entities: list[str]
    relations: list[str]
    entity_index: dict[str, int]
    relation_index: dict[str, int]
    entity_emb: Tensor
    relation_emb: Tensor
    known: KnownTriples

    @classmethod
    def build(
        cls,
        ref: str,
        loaded: LoadedModelLike,
        *,
        store_url: str | None = None,
    ) -> "ServedModel":
        """Run the encoder once and index the vocabularies and the known triples.

        Known triples are the model's training triples and, when ``store_url`` is
        given, every triple of the graph it was trained on as stored there now
        (validation, test and later imports included).
        """
        with torch.inference_mode():
            entity_emb, relation_emb = loaded.encode()
        entity_index = {iri: i for i, iri in enumerate(loaded.entities)}
        relation_index = {iri: i for i, iri in enumerate(loaded.relations)}
        known = loaded.train_triples.to(torch.int64)
        if store_url is not None:
            if not loaded.graph_name:
                raise ConfigurationError(
                    f"{loaded.version} does not record the graph it was trained on, "
                    "so its known triples cannot be read from the store (drop --db)"
                )
            stored = stored_triples(store_url, loaded.graph_name, entity_index, relation_index)
            known = torch.cat([known, stored])
        return cls(
            ref=ref,
            version=loaded.version,
            plugin=loaded.plugin,
            graph=loaded.graph_name,
            model=loaded.model,
            entities=list(loaded.entities),
            relations=list(loaded.relations),
            entity_index=entity_index,
            relation_index=relation_index,
            entity_emb=entity_emb.detach().contiguous(),
            relation_emb=relation_emb.detach().contiguous(),
            known=KnownTriples.build(known, len(loaded.entities), len(loaded.relations)),
        )

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def embedding_dim(self) -> int:
        return int(self.entity_emb.shape[1])

    def entity_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`UnknownEntity` names the first one not in the vocabulary."""
        return _lookup(self.entity_index, iris, UnknownEntity)

    def relation_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`UnknownRelation` names the first one not in the vocabulary."""
        return _lookup(self.relation_index, iris, UnknownRelation)

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


def _lookup(index: dict[str, int], iris: Sequence[str], error: type[Exception]) -> list[int]:
    try:
        return [index[iri] for iri in iris]
    except KeyError as missing:
        raise error(missing.args[0]) from None
