"""Vocabulary: IRIs to ids with typed errors, and triples moved between two vocabularies."""

from __future__ import annotations

import pytest
import torch

from kgserver.errors import UnknownEntity, UnknownRelation
from kgserver.graph import Vocabulary

E = "http://example.org/e/"
R = "http://example.org/r/"


def test_ids_are_positions_and_unknown_iris_are_typed_errors_naming_the_first() -> None:
    vocabulary = Vocabulary([E + "a", E + "b", E + "c"], [R + "x", R + "y"])
    assert (vocabulary.num_entities, vocabulary.num_relations) == (3, 2)
    assert vocabulary.entity_ids([E + "c", E + "a", E + "c"]) == [2, 0, 2]
    assert vocabulary.relation_ids([R + "y"]) == [1]
    assert vocabulary.entity_ids([]) == []
    with pytest.raises(UnknownEntity) as entity_error:
        vocabulary.entity_ids([E + "a", E + "zz", E + "qq"])
    assert entity_error.value.iri == E + "zz"
    with pytest.raises(UnknownRelation) as relation_error:
        vocabulary.relation_ids([R + "x", E + "a"])
    assert relation_error.value.iri == E + "a"


def test_the_sequences_are_copied_so_the_lookups_cannot_go_stale() -> None:
    entities = [E + "a"]
    vocabulary = Vocabulary(entities, [R + "x"])
    entities.append(E + "b")
    assert vocabulary.entities == (E + "a",)
    with pytest.raises(UnknownEntity):
        vocabulary.entity_ids([E + "b"])


def test_map_triples_translates_by_iri_and_drops_and_counts_what_the_target_lacks() -> None:
    graph = Vocabulary([E + "a", E + "b", E + "new", E + "c"], [R + "x", R + "unseen", R + "y"])
    model = Vocabulary([E + "c", E + "b", E + "a"], [R + "y", R + "x"])
    triples = torch.tensor(
        [
            [0, 0, 1],  # a x b
            [2, 0, 1],  # new x b: unknown entity
            [3, 2, 0],  # c y a
            [1, 1, 3],  # b unseen c: unknown relation
            [1, 0, 0],  # b x a
        ]
    )
    mapped, dropped = model.map_triples(triples, graph)
    assert dropped == 2
    assert mapped.tolist() == [[2, 1, 1], [0, 0, 2], [1, 1, 2]]
    assert mapped.dtype == torch.int64
    same, none = model.map_triples(mapped, model)
    assert torch.equal(same, mapped) and none == 0
    empty, zero = model.map_triples(torch.zeros(0, 3, dtype=torch.int64), graph)
    assert empty.shape == (0, 3) and zero == 0
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        model.map_triples(torch.zeros(3, dtype=torch.int64), graph)
