"""A model's or a graph's vocabulary: entity and relation IRIs in id order, and back.

Ids are positions in ``entities``/``relations``. Every place that turns IRIs
into ids (serving requests, the MLflow flavor, re-evaluating a model on a graph,
reading a graph's known triples for a served model) goes through one
:class:`Vocabulary`, so an unknown IRI is always the same typed error and
triples always move between two id spaces the same way.

This module needs torch only (no DGL, no store).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kgserver.errors import UnknownEntity, UnknownRelation


class Vocabulary:
    """Entity and relation IRIs in id order, with the reverse lookups built once.

    Treat it as immutable: the lookups are built from the sequences given.
    """

    def __init__(self, entities: Sequence[str], relations: Sequence[str]) -> None:
        self.entities: tuple[str, ...] = tuple(entities)
        self.relations: tuple[str, ...] = tuple(relations)
        self._entity_ids = {iri: i for i, iri in enumerate(self.entities)}
        self._relation_ids = {iri: i for i, iri in enumerate(self.relations)}

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def has_entity(self, iri: str) -> bool:
        return iri in self._entity_ids

    def has_relation(self, iri: str) -> bool:
        return iri in self._relation_ids

    def with_entities(self, new: Sequence[str]) -> Vocabulary:
        """This vocabulary with ``new`` entities (not yet in it) appended: old ids stay as they are."""
        return Vocabulary([*self.entities, *new], self.relations) if new else self

    def entity_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`UnknownEntity` names the first one not in the vocabulary."""
        try:
            return [self._entity_ids[iri] for iri in iris]
        except KeyError as missing:
            raise UnknownEntity(missing.args[0]) from None

    def relation_ids(self, iris: Sequence[str]) -> list[int]:
        """Ids of ``iris``; :class:`UnknownRelation` names the first one not in the vocabulary."""
        try:
            return [self._relation_ids[iri] for iri in iris]
        except KeyError as missing:
            raise UnknownRelation(missing.args[0]) from None

    def ids_of(self, triples: Tensor, source: Vocabulary) -> Tensor:
        """``triples`` (``[n, 3]`` ids of ``source``) in this vocabulary's ids, row for row, with
        ``-1`` for an entity or relation this vocabulary lacks."""
        if triples.dim() != 2 or triples.shape[1] != 3:
            raise ValueError(f"triples must be an [n, 3] tensor, got shape {tuple(triples.shape)}")
        entity_map = _id_map(source.entities, self._entity_ids, triples.device)
        relation_map = _id_map(source.relations, self._relation_ids, triples.device)
        triples = triples.long()
        return torch.stack([entity_map[triples[:, 0]], relation_map[triples[:, 1]], entity_map[triples[:, 2]]], dim=1)

    def map_triples(self, triples: Tensor, source: Vocabulary) -> tuple[Tensor, int]:
        """``triples`` (``[n, 3]`` ids of ``source``) in this vocabulary's ids, and how many were dropped.

        A triple naming an entity or relation this vocabulary lacks has no ids
        here, so it is left out (and counted); the others keep their order.
        """
        mapped = self.ids_of(triples, source)
        keep = (mapped >= 0).all(dim=1)
        return mapped[keep], int((~keep).sum())


def _id_map(iris: Sequence[str], ids: dict[str, int], device: torch.device) -> Tensor:
    """Source id -> id in ``ids`` (``-1`` where ``ids`` lacks the IRI)."""
    return torch.tensor([ids.get(iri, -1) for iri in iris], dtype=torch.long, device=device)
