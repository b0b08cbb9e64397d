"""The explanation core on small random graphs: exact neighbourhoods, both attribution methods,
attention beside, path search, and the errors."""

from __future__ import annotations

import dgl
import pytest
import torch

from kgserver.errors import ExplanationUnavailable
from kgserver.explain import Explainer
from kgserver.explain.attribution import (
    Prediction,
    attention_per_layer,
    gradient_weights,
    masking_weights,
)
from kgserver.explain.neighbourhood import neighbourhood
from kgserver.explain.paths import best_paths
from kgserver.registry import KGModel
from kgserver_plugins.rgcn import RGCN
from tests.plugins.conftest import NUM_ENTITIES, build, random_triples


@pytest.fixture(scope="module")
def triples() -> torch.Tensor:
    return random_triples(NUM_ENTITIES, 5, 120, seed=1)


def _model(plugin: str, **overrides: object) -> KGModel:
    settings: dict[str, object] = {"num_layers": 2, "dropout": 0.0, "unseen_entity_rate": 0.0, **overrides}
    return build(plugin, 0, **settings).eval()


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_the_neighbourhood_gives_head_and_tail_their_full_graph_embeddings(plugin: str, triples: torch.Tensor) -> None:
    model = _model(plugin)
    explainer = Explainer(model, triples)
    head, _, tail = triples[0].tolist()
    around = neighbourhood(explainer.graph, [head, tail], hops=2)
    assert 0 < len(around.edge_ids) <= explainer.graph.num_edges()
    with torch.no_grad():
        local, _ = model.encode(around.blocks)
    for entity in (head, tail):
        torch.testing.assert_close(local[around.position(entity)], explainer.entity_emb[entity], rtol=1e-4, atol=1e-5)


def test_only_edges_within_reach_are_candidates(triples: torch.Tensor) -> None:
    """A one-layer encoder of h and t reads exactly the in-edges of h and t."""
    explainer = Explainer(_model("rgcn", num_layers=1), triples)
    head, _, tail = triples[3].tolist()
    around = neighbourhood(explainer.graph, [head, tail], hops=1)
    _, dst, ids = explainer.graph.in_edges(torch.tensor([head, tail]), form="all")
    assert torch.equal(around.edge_ids, torch.sort(ids).values)
    assert set(dst.tolist()) <= {head, tail}


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_gradient_weights_equal_the_whole_graphs_gradient(plugin: str, triples: torch.Tensor) -> None:
    """Weighing only the neighbourhood loses nothing: outside it the whole graph's gradient is zero."""
    model = _model(plugin)
    explainer = Explainer(model, triples)
    head, relation, tail = triples[6].tolist()
    around = neighbourhood(explainer.graph, [head, tail], hops=2)
    baseline = explainer.entity_emb.mean(dim=0, keepdim=True)
    local = gradient_weights(Prediction(model, head, relation, tail, around, baseline))
    weight = torch.ones(explainer.graph.num_edges(), requires_grad=True)
    entity_emb, relation_emb = model.encode(explainer.graph, edge_weight=weight)
    scores = model.score(entity_emb[[head]], relation_emb[[relation]], torch.cat([entity_emb[[tail]], baseline]))
    (whole,) = torch.autograd.grad(scores[0, 0] - scores[0, 1], weight)
    torch.testing.assert_close(local, whole[around.edge_ids], rtol=1e-4, atol=1e-6)
    outside = torch.ones(explainer.graph.num_edges(), dtype=torch.bool)
    outside[around.edge_ids] = False
    assert whole[outside].abs().max() == 0


@pytest.fixture(scope="module")
def sparse_triples() -> torch.Tensor:
    """Few enough edges that masking (one encoding per neighbourhood edge) takes a moment."""
    return random_triples(NUM_ENTITIES, 5, 50, seed=2)


def test_masking_weights_equal_removing_the_edge_from_the_whole_graph(sparse_triples: torch.Tensor) -> None:
    triples = sparse_triples
    model = _model("rgcn")
    explainer = Explainer(model, triples, method="masking")
    head, relation, tail = triples[5].tolist()
    around = neighbourhood(explainer.graph, [head, tail], hops=2)
    baseline = explainer.entity_emb.mean(dim=0, keepdim=True)
    weights = masking_weights(Prediction(model, head, relation, tail, around, baseline), max_masked_edges=10_000)

    def margin(graph: dgl.DGLGraph) -> float:
        with torch.no_grad():
            entity_emb, relation_emb = model.encode(graph)
            scores = model.score(
                entity_emb[[head]], relation_emb[[relation]], torch.cat([entity_emb[[tail]], baseline])
            )
        return float(scores[0, 0] - scores[0, 1])

    full = margin(explainer.graph)
    for position in (0, len(around.edge_ids) // 2, len(around.edge_ids) - 1):
        without = dgl.remove_edges(explainer.graph, around.edge_ids[position : position + 1])
        assert float(weights[position]) == pytest.approx(full - margin(without), abs=1e-5)


class _Unweighted(RGCN):
    """R-GCN as a plugin that does not declare per-edge weights."""

    accepts_edge_weight = False


def test_a_plugin_without_edge_weights_is_explained_by_masking(sparse_triples: torch.Tensor) -> None:
    triples = sparse_triples
    reference = _model("rgcn")
    model = _Unweighted(reference.num_entities, reference.num_relations, reference.hparams)
    model.load_state_dict(reference.state_dict())
    model.eval()
    head, relation, tail = triples[7].tolist()
    masked = Explainer(model, triples).explain(head, relation, tail, k=5)
    assert masked.method == "masking"
    gradient = Explainer(reference, triples).explain(head, relation, tail, k=5)
    assert gradient.method == "gradient"
    assert masked.score == pytest.approx(gradient.score) and masked.rank == gradient.rank
    assert masked.evidence[0].triple in {item.triple for item in gradient.evidence[:3]}
    with pytest.raises(ExplanationUnavailable, match="does not accept edge weights"):
        Explainer(model, triples, method="gradient")


def test_masking_refuses_a_neighbourhood_beyond_its_limit(triples: torch.Tensor) -> None:
    model = _model("rgcn")
    explainer = Explainer(model, triples)
    head, relation, tail = triples[0].tolist()
    around = neighbourhood(explainer.graph, [head, tail], hops=2)
    prediction = Prediction(model, head, relation, tail, around, explainer.entity_emb.mean(0, keepdim=True))
    with pytest.raises(ExplanationUnavailable, match=f"has {len(around.edge_ids)} message edges"):
        masking_weights(prediction, max_masked_edges=len(around.edge_ids) - 1)


def test_gatv2_reports_its_attention_beside_the_evidence(triples: torch.Tensor) -> None:
    model = _model("gatv2", num_heads=2)
    explainer = Explainer(model, triples)
    head, relation, tail = triples[2].tolist()
    explanation = explainer.explain(head, relation, tail, k=8)
    assert all(len(item.attention) == 2 for item in explanation.evidence)
    assert all(0.0 <= value <= 1.0 for item in explanation.evidence for value in item.attention)
    assert any(value > 0 for item in explanation.evidence for value in item.attention)
    # the last layer's attention into head and tail is the full graph's (their in-edges are all in the block)
    around = neighbourhood(explainer.graph, [head, tail], hops=2)
    with torch.no_grad():
        model.encode(explainer.graph)
        full = model.attention()[-1].mean(dim=1)
        model.encode(around.blocks)
    table = attention_per_layer(model, around)
    last = around.block_edges[-1]
    torch.testing.assert_close(table[last, -1], full[around.edge_ids[last]])
    plain = Explainer(_model("rgcn"), triples).explain(head, relation, tail, k=3)
    assert all(item.attention == () for item in plain.evidence)


def test_score_and_filtered_rank_are_those_of_the_full_graph(triples: torch.Tensor) -> None:
    model = _model("compgcn")
    explainer = Explainer(model, triples)
    head, relation, tail = triples[4].tolist()
    explanation = explainer.explain(head, relation, tail, k=3)
    with torch.no_grad():
        entity_emb, relation_emb = model.encode(explainer.graph)
        scores = model.score(entity_emb[[head]], relation_emb[[relation]], entity_emb)[0]
    known = triples[(triples[:, 0] == head) & (triples[:, 1] == relation), 2]
    competing = torch.ones(NUM_ENTITIES, dtype=torch.bool)
    competing[known] = False
    assert explanation.score == pytest.approx(float(scores[tail]), abs=1e-5)
    assert explanation.rank == 1 + int(((scores > scores[tail]) & competing).sum())
    assert len(explanation.evidence) == 3
    assert [item.weight for item in explanation.evidence] == sorted(
        (item.weight for item in explanation.evidence), reverse=True
    )


def test_bad_ids_k_and_an_undeclared_receptive_field_are_refused(triples: torch.Tensor) -> None:
    explainer = Explainer(_model("rgcn"), triples)
    with pytest.raises(ValueError, match="k must be at least 1"):
        explainer.explain(0, 0, 1, k=0)
    with pytest.raises(ValueError, match=f"tail id {NUM_ENTITIES} is outside"):
        explainer.explain(0, 0, NUM_ENTITIES, k=3)
    with pytest.raises(ValueError, match="relation id 5 is outside"):
        explainer.explain(0, 5, 1, k=3)

    class NoField(RGCN):
        def receptive_field(self) -> None:  # type: ignore[override]  # the contract's default: undeclared
            return None

    reference = _model("rgcn")
    with pytest.raises(ExplanationUnavailable, match="receptive field"):
        Explainer(NoField(reference.num_entities, reference.num_relations, reference.hparams), triples)


def test_paths_chain_head_to_tail_through_supporting_triples_either_way() -> None:
    weighted = [
        ((0, 0, 1), 3.0),  # 0 -> 1
        ((2, 1, 1), 2.0),  # 1 <- 2, walked backwards
        ((2, 0, 9), 1.5),  # 2 -> 9
        ((0, 2, 9), 0.5),  # the direct edge, weak
        ((0, 3, 5), 4.0),  # a dead end
        ((5, 3, 9), -1.0),  # against the prediction: never walked
        ((1, 1, 7), 5.0),
        ((7, 1, 8), 5.0),
        ((8, 1, 9), 5.0),  # 0 -> 1 -> 7 -> 8 -> 9 is four hops: too long
    ]
    paths = best_paths(0, 9, weighted, k=5)
    assert paths == [([(0, 0, 1), (2, 1, 1), (2, 0, 9)], 1.5), ([(0, 2, 9)], 0.5)]
    assert best_paths(0, 9, weighted, k=1) == paths[:1]
    assert best_paths(3, 9, weighted, k=5) == []
