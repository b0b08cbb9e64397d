"""Live re-encoding: new entities and changed neighbourhoods, recomputed locally, equal to the whole graph.

Real plugins (two layers, so the receptive field is two hops) on a sparse random
graph, so that a change reaches only part of it.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from kgserver.errors import UnseenEntityUnsupported, UnseenRelationUnsupported
from kgserver.graph.index import TripleIndex
from kgserver.graph.snapshot import message_graph
from kgserver.graph.vocabulary import Vocabulary
from kgserver.registry import KGModel
from kgserver.serving.live import affected_entities, reencode
from kgserver.serving.served import ServedModel
from tests.plugins.conftest import NUM_ENTITIES, NUM_RELATIONS, build, random_triples

PLUGINS = ("compgcn", "gatv2", "rgcn")
NEW = 3  # entities added after training


def _served(model: KGModel, train: torch.Tensor) -> ServedModel:
    model.eval()
    with torch.inference_mode():
        entity_emb, relation_emb = model.encode(message_graph(train, NUM_ENTITIES, NUM_RELATIONS))
    return ServedModel(
        ref="toy@live",
        version="1",
        plugin=model.name,
        graph="toy",
        model=model,
        vocabulary=Vocabulary([f"e{i}" for i in range(NUM_ENTITIES)], [f"r{i}" for i in range(NUM_RELATIONS)]),
        entity_emb=entity_emb,
        relation_emb=relation_emb,
        known=TripleIndex.build(train, NUM_RELATIONS),
        train_triples=train,
        known_triples=train,
        trained_entities=NUM_ENTITIES,
    )


def _extended_vocabulary(served: ServedModel, new: int = NEW) -> Vocabulary:
    entities = [*served.vocabulary.entities, *(f"new{i}" for i in range(new))]
    return Vocabulary(entities, served.vocabulary.relations)


@pytest.fixture
def train() -> torch.Tensor:
    """Sparse: about one triple per entity, so two hops of a few nodes stay well short of the graph."""
    return random_triples(NUM_ENTITIES, NUM_RELATIONS, 40, seed=3)


def _added() -> torch.Tensor:
    """Triples naming the new entities (ids 40..42; 42 is linked to 41 only) and one between known entities."""
    return torch.tensor([[40, 0, 1], [2, 1, 40], [41, 2, 5], [42, 3, 41], [7, 4, 9]])


def _touched(added: torch.Tensor) -> torch.Tensor:
    return torch.unique(added[:, [0, 2]])


def _whole_graph(model: KGModel, triples: torch.Tensor, num_entities: int) -> torch.Tensor:
    with torch.inference_mode():
        entity_emb, _ = model.encode(message_graph(triples, num_entities, NUM_RELATIONS))
    return entity_emb


def _within_hops(triples: torch.Tensor, seeds: set[int], hops: int) -> set[int]:
    """Breadth-first search over the undirected triples, independent of DGL."""
    reached, frontier = set(seeds), set(seeds)
    for _ in range(hops):
        frontier = {
            int(other)
            for head, _, tail in triples.tolist()
            for node, other in ((head, tail), (tail, head))
            if node in frontier
        } - reached
        reached |= frontier
    return reached


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("layers", [1, 2])
def test_reencode_equals_encoding_the_whole_extended_graph(plugin: str, layers: int, train: torch.Tensor) -> None:
    served = _served(build(plugin, num_layers=layers, unseen_entity_rate=0.3), train)
    added = _added()
    current = torch.cat([train, added])
    vocabulary = _extended_vocabulary(served)

    live = reencode(served, vocabulary, current, _touched(added))

    expected = _whole_graph(served.model, current, NUM_ENTITIES + NEW)
    assert live.shape == (NUM_ENTITIES + NEW, served.embedding_dim)
    torch.testing.assert_close(live, expected, atol=1e-5, rtol=0)
    changed = _within_hops(current, set(_touched(added).tolist()), layers - 1)  # layers aggregate at the destination
    unchanged = sorted(set(range(NUM_ENTITIES)) - changed)
    assert unchanged, "the fixture graph must leave some entities out of reach"
    assert torch.equal(live[unchanged], served.entity_emb[unchanged])  # copied, not recomputed


@pytest.mark.parametrize("plugin", PLUGINS)
@pytest.mark.parametrize("at_destination", [True, False], ids=["destination-aggregating", "any"])
def test_only_the_receptive_field_of_the_touched_nodes_is_encoded(
    plugin: str, at_destination: bool, train: torch.Tensor
) -> None:
    """Two layers: entities within one hop of a touched node for the built-in plugins (their layers
    aggregate at the destination), within two for a plugin that does not declare it."""
    served = _served(build(plugin, num_layers=2, unseen_entity_rate=0.3), train)
    served.model.aggregates_at_destination = at_destination  # type: ignore[misc]  # as a plugin would declare
    radius = 1 if at_destination else 2
    added = _added()
    current = torch.cat([train, added])
    encoded: list[Any] = []
    original = served.model.encode

    def recording_encode(graph: Any, edge_weight: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        encoded.append(graph)
        return original(graph, edge_weight)

    served.model.encode = recording_encode  # type: ignore[method-assign]  # count what reencode asks for
    reencode(served, _extended_vocabulary(served), current, _touched(added))

    expected = _within_hops(current, set(_touched(added).tolist()), radius)
    assert len(encoded) == 1 and isinstance(encoded[0], list), "one encoding, of blocks, not of the whole graph"
    blocks = encoded[0]
    assert len(blocks) == 2  # the blocks still reach the whole receptive field
    assert set(blocks[-1].dstdata["_ID"].tolist()) == expected
    assert len(expected) < NUM_ENTITIES + NEW
    graph = message_graph(current, NUM_ENTITIES + NEW, NUM_RELATIONS)
    assert set(affected_entities(graph, _touched(added), radius).tolist()) == expected


def test_a_changed_neighbourhood_is_reencoded_even_without_the_unseen_vector(train: torch.Tensor) -> None:
    """Known entities only: any plugin can be re-encoded locally, whatever its training."""
    served = _served(build("compgcn", num_layers=2, unseen_entity_rate=0.0), train)
    added = torch.tensor([[7, 4, 9], [11, 0, 3]])
    current = torch.cat([train, added])
    live = reencode(served, served.vocabulary, current, _touched(added))
    torch.testing.assert_close(live, _whole_graph(served.model, current, NUM_ENTITIES), atol=1e-5, rtol=0)


def test_removed_triples_are_forgotten_by_touching_their_endpoints(train: torch.Tensor) -> None:
    served = _served(build("gatv2", num_layers=2, unseen_entity_rate=0.3), train)
    removed = train[:2]
    current = train[2:]
    live = reencode(served, served.vocabulary, current, _touched(removed))
    torch.testing.assert_close(live, _whole_graph(served.model, current, NUM_ENTITIES), atol=1e-5, rtol=0)


def test_a_model_not_trained_for_unseen_entities_says_it_needs_retraining(train: torch.Tensor) -> None:
    served = _served(build("rgcn", num_layers=2, unseen_entity_rate=0.0), train)
    with pytest.raises(UnseenEntityUnsupported, match="new0.*retrain"):
        reencode(served, _extended_vocabulary(served), torch.cat([train, _added()]), _touched(_added()))


def test_a_new_relation_or_a_reordered_vocabulary_is_refused(train: torch.Tensor) -> None:
    served = _served(build("compgcn", num_layers=2, unseen_entity_rate=0.3), train)
    more_relations = Vocabulary(served.vocabulary.entities, [*served.vocabulary.relations, "r-new"])
    with pytest.raises(UnseenRelationUnsupported, match="r-new"):
        reencode(served, more_relations, train, torch.tensor([0]))
    reordered = Vocabulary(list(reversed(served.vocabulary.entities)), served.vocabulary.relations)
    with pytest.raises(ValueError, match="extend"):
        reencode(served, reordered, train, torch.tensor([0]))
    with pytest.raises(ValueError, match="entity ids outside"):
        reencode(served, served.vocabulary, torch.tensor([[0, 0, NUM_ENTITIES]]), torch.tensor([0]))


def test_a_state_extended_with_new_entities_can_still_be_explained(train: torch.Tensor) -> None:
    """The explainer of an extended state walks the extended message graph, new entities included."""
    from kgserver.explain import Explainer

    served = _served(build("compgcn", num_layers=2, unseen_entity_rate=0.3), train)
    added = _added()
    current = torch.cat([train, added])
    entity_emb = reencode(served, _extended_vocabulary(served), current, _touched(added))
    explainer = Explainer(served.model, current, embeddings=(entity_emb, served.relation_emb))
    about_new = explainer.explain(40, 0, 1, k=3)  # (new0, r0, e1), a triple the store added
    assert about_new.rank >= 1 and about_new.evidence
    assert any(40 in (item.triple[0], item.triple[2]) for item in about_new.evidence)
    assert explainer.explain(2, 1, 40, k=3).evidence  # a known head, a new tail
