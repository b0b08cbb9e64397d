"""Layer- and decoder-level checks: attention normalisation, composition, decoder shapes."""

from __future__ import annotations

from collections.abc import Callable

import dgl
import pytest
import torch

from kgserver.registry import KGModel
from kgserver_plugins.decoders import ComplEx, ConvE, DistMult
from kgserver_plugins.graphs import RelationGroups, drop_edges
from kgserver_plugins.layers.compgcn_conv import CompGCNConv, circular_correlation, compose
from kgserver_plugins.layers.gatv2_conv import RelGATv2Conv
from kgserver_plugins.layers.rgcn_conv import RelGraphConv


def test_gatv2_attention_sums_to_one_over_incoming_edges(
    build_model: Callable[..., KGModel], graph: dgl.DGLGraph
) -> None:
    model = build_model("gatv2", num_layers=2, num_heads=4).eval()
    with torch.no_grad():
        model.encode(graph)
    _, dst = graph.edges()
    for attention in model.attention():
        assert attention is not None and attention.shape == (graph.num_edges(), 4)
        assert (attention >= 0).all()
        totals = torch.zeros(graph.num_nodes(), 4).index_add_(0, dst, attention)
        has_incoming = graph.in_degrees() > 0
        torch.testing.assert_close(totals[has_incoming], torch.ones(int(has_incoming.sum()), 4))


def test_gatv2_attention_depends_on_the_receiving_node(
    build_model: Callable[..., KGModel], graph: dgl.DGLGraph
) -> None:
    """Dynamic attention: the same source and relation get different weights at different targets."""
    model = build_model("gatv2", num_heads=1).eval()
    with torch.no_grad():
        model.encode(graph)
    attention = model.attention()[0][:, 0]
    src, dst = graph.edges()
    in_degree = graph.in_degrees()[dst].float()
    assert not torch.allclose(attention, 1.0 / in_degree)


def test_circular_correlation_matches_its_definition() -> None:
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    expected = torch.stack([sum(a[:, i] * b[:, (i + k) % 7] for i in range(7)) for k in range(7)], dim=1)
    torch.testing.assert_close(circular_correlation(a, b), expected, rtol=1e-4, atol=1e-5)


def test_distmult_is_the_trilinear_product() -> None:
    h, r, t = torch.randn(5, 8), torch.randn(5, 8), torch.randn(11, 8)
    scores = DistMult()(h, r, t)
    assert scores.shape == (5, 11)
    torch.testing.assert_close(scores[2, 7], (h[2] * r[2] * t[7]).sum())


def test_conve_scores_every_candidate_and_one_query_in_eval() -> None:
    decoder = ConvE(dim=20, height=4, filters=3, kernel=3, input_dropout=0.2, feature_dropout=0.2, hidden_dropout=0.3)
    h, r, t = torch.randn(6, 20), torch.randn(6, 20), torch.randn(13, 20)
    assert decoder(h, r, t).shape == (6, 13)
    decoder.eval()
    single = decoder(h[:1], r[:1], t)
    assert single.shape == (1, 13)
    torch.testing.assert_close(single, decoder(h, r, t)[:1])


def test_conve_rejects_a_kernel_larger_than_its_image() -> None:
    with pytest.raises(ValueError, match="conve_kernel 9"):
        ConvE(dim=20, height=4, filters=3, kernel=9, input_dropout=0.0, feature_dropout=0.0, hidden_dropout=0.0)


def test_drop_edges_keeps_nodes_features_and_block_structure(graph: dgl.DGLGraph) -> None:
    torch.manual_seed(0)
    thinner = drop_edges(graph, 0.5)
    assert thinner.num_nodes() == graph.num_nodes()
    assert 0 < thinner.num_edges() < graph.num_edges()
    assert thinner.edata["rel"].shape == (thinner.num_edges(),)
    _, _, blocks = dgl.dataloading.NeighborSampler([-1]).sample_blocks(graph, torch.arange(5))
    block = drop_edges(blocks[0], 0.5)
    assert block.is_block
    assert (block.num_src_nodes(), block.num_dst_nodes()) == (blocks[0].num_src_nodes(), blocks[0].num_dst_nodes())
    assert torch.equal(block.srcdata[dgl.NID], blocks[0].srcdata[dgl.NID])
    assert block.num_edges() < blocks[0].num_edges()
    with pytest.raises(ValueError, match="edge dropout"):
        drop_edges(graph, 1.0)


@pytest.mark.parametrize("composition", ["sub", "mult", "corr"])
def test_compgcn_directional_mean_matches_per_edge_messages(composition: str, graph: dgl.DGLGraph) -> None:
    """The fused aggregation equals composing every edge and averaging per direction."""
    num_base_rels = int(graph.edata["rel"].max()) // 2 + 1
    layer = CompGCNConv(12, 12, num_base_rels, composition=composition)
    h, rel = torch.randn(graph.num_nodes(), 12), torch.randn(2 * num_base_rels, 12)
    src, dst = graph.edges()
    messages = compose(h[src], rel[graph.edata["rel"]], composition)
    direction = (graph.edata["rel"] >= num_base_rels).long()
    expected = torch.zeros(graph.num_nodes(), 2, 12).index_put_((dst, direction), messages, accumulate=True)
    expected /= graph.in_degrees().clamp(min=1).view(-1, 1, 1).float()
    with graph.local_scope():
        torch.testing.assert_close(layer.directional_mean(graph, h, rel), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("feature_shape", [(2,), (1,)], ids=["same shape", "broadcast"])
def test_times_relation_matches_gathering_each_groups_relation_row(
    feature_shape: tuple[int, ...], dtype: torch.dtype, graph: dgl.DGLGraph
) -> None:
    """Values and both gradients equal ``features * relation_features[groups.rel]``, also for
    relation types no group has (two extra rows here) and for complex tensors (CompGCN's spectra)."""
    num_types = int(graph.edata["rel"].max()) + 3
    groups = RelationGroups(graph, num_types)
    assert bool((groups.rel[1:] >= groups.rel[:-1]).all()), "groups are ordered by relation"
    features = torch.randn(len(groups), *feature_shape, dtype=dtype, requires_grad=True)
    rows = torch.randn(num_types, 2, dtype=dtype, requires_grad=True)
    torch.testing.assert_close(groups.times_relation(features, rows), features * rows[groups.rel])
    assert torch.autograd.gradcheck(lambda f, r: groups.times_relation(f, r), (features, rows))


@pytest.mark.parametrize("regularizer", ["basis", "bdd"])
def test_rgcn_aggregation_matches_per_edge_relation_weights(regularizer: str, graph: dgl.DGLGraph) -> None:
    num_rels = int(graph.edata["rel"].max()) + 1
    layer = RelGraphConv(12, 12, num_rels, regularizer=regularizer, num_bases=3)
    if regularizer == "basis":
        weights = torch.einsum("rb,bio->rio", layer.coefficients, layer.bases)
    else:
        weights = torch.stack([torch.block_diag(*blocks) for blocks in layer.blocks])
    h = torch.randn(graph.num_nodes(), 12)
    src, dst = graph.edges()
    messages = torch.einsum("ei,eio->eo", h[src], weights[graph.edata["rel"]])
    expected = torch.zeros(graph.num_nodes(), 12).index_add_(0, dst, messages)
    expected = expected / graph.in_degrees().clamp(min=1).unsqueeze(1).float() + layer.self_loop(h)
    out, rel = layer(graph, h, torch.zeros(num_rels, 12))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention_dim", [None, 4])
def test_gatv2_layer_matches_its_definition_edge_by_edge(attention_dim: int | None, graph: dgl.DGLGraph) -> None:
    """``alpha = softmax_in(a^T LeakyReLU(W [h_u || h_v || e_r]))``, ``h_v' = W_self h_v + sum alpha W_m [h_u || e_r]``,
    with ``W`` as wide as the layer or narrower (``attention_dim``)."""
    num_rels, heads, dim = int(graph.edata["rel"].max()) + 1, 2, 8
    layer = RelGATv2Conv(dim, dim, num_heads=heads, negative_slope=0.2, attention_dim=attention_dim)
    h, rel = torch.randn(graph.num_nodes(), dim), torch.randn(num_rels, dim)
    w_attend = torch.cat([layer.attend_src.weight, layer.attend_dst.weight, layer.attend_rel.weight], dim=1)
    w_message = torch.cat([layer.message_src.weight, layer.message_rel.weight], dim=1)
    src, dst = graph.edges()
    types = graph.edata["rel"]
    hidden = torch.cat([h[src], h[dst], rel[types]], dim=1) @ w_attend.t() + layer.attend_rel.bias
    hidden = torch.nn.functional.leaky_relu(hidden, 0.2).view(-1, heads, (attention_dim or dim) // heads)
    logits = (hidden * layer.attention).sum(-1)
    messages = (torch.cat([h[src], rel[types]], dim=1) @ w_message.t() + layer.message_rel.bias).view(
        -1, heads, dim // heads
    )
    expected = layer.w_self(h).view(-1, heads, dim // heads).clone()
    for node in range(graph.num_nodes()):
        incoming = (dst == node).nonzero().squeeze(1)
        if len(incoming):
            alpha = torch.softmax(logits[incoming], dim=0)
            expected[node] += (alpha.unsqueeze(-1) * messages[incoming]).sum(0)
    out, same_rel = layer(graph, h, rel)
    torch.testing.assert_close(out, expected.flatten(1), rtol=1e-4, atol=1e-5)
    assert same_rel is rel


def test_complex_is_the_real_part_of_the_hermitian_trilinear_product() -> None:
    h, r, t = torch.randn(4, 10), torch.randn(4, 10), torch.randn(9, 10)
    hc, rc, tc = (torch.complex(*x.chunk(2, dim=-1)) for x in (h, r, t))
    expected = (hc[:, None] * rc[:, None] * tc[None].conj()).sum(-1).real
    torch.testing.assert_close(ComplEx()(h, r, t), expected, rtol=1e-4, atol=1e-5)


def _edge_weights(graph: dgl.DGLGraph) -> torch.Tensor:
    return torch.rand(graph.num_edges(), generator=torch.Generator().manual_seed(3)) * 2


@pytest.mark.parametrize("composition", ["sub", "mult", "corr"])
def test_compgcn_edge_weights_multiply_each_composed_message(composition: str, graph: dgl.DGLGraph) -> None:
    num_base_rels = int(graph.edata["rel"].max()) // 2 + 1
    layer = CompGCNConv(12, 12, num_base_rels, composition=composition)
    h, rel = torch.randn(graph.num_nodes(), 12), torch.randn(2 * num_base_rels, 12)
    weight = _edge_weights(graph)
    src, dst = graph.edges()
    messages = compose(h[src], rel[graph.edata["rel"]], composition) * weight.unsqueeze(1)
    direction = (graph.edata["rel"] >= num_base_rels).long()
    expected = torch.zeros(graph.num_nodes(), 2, 12).index_put_((dst, direction), messages, accumulate=True)
    expected /= graph.in_degrees().clamp(min=1).view(-1, 1, 1).float()
    torch.testing.assert_close(layer.directional_mean(graph, h, rel, weight), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("regularizer", ["basis", "bdd"])
def test_rgcn_edge_weights_multiply_each_message(regularizer: str, graph: dgl.DGLGraph) -> None:
    num_rels = int(graph.edata["rel"].max()) + 1
    layer = RelGraphConv(12, 12, num_rels, regularizer=regularizer, num_bases=3)
    if regularizer == "basis":
        weights = torch.einsum("rb,bio->rio", layer.coefficients, layer.bases)
    else:
        weights = torch.stack([torch.block_diag(*blocks) for blocks in layer.blocks])
    h, edge_weight = torch.randn(graph.num_nodes(), 12), _edge_weights(graph)
    src, dst = graph.edges()
    messages = torch.einsum("ei,eio->eo", h[src], weights[graph.edata["rel"]]) * edge_weight.unsqueeze(1)
    expected = torch.zeros(graph.num_nodes(), 12).index_add_(0, dst, messages)
    expected = expected / graph.in_degrees().clamp(min=1).unsqueeze(1).float() + layer.self_loop(h)
    out, _ = layer(graph, h, torch.zeros(num_rels, 12), edge_weight=edge_weight)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_gatv2_edge_weights_multiply_messages_after_the_softmax(graph: dgl.DGLGraph) -> None:
    """Weighted: ``h_v' = W_self h_v + sum w_e alpha_e W_m [h_u || e_r]``.

    The reported attention is the unweighted softmax.
    """
    num_rels, dim = int(graph.edata["rel"].max()) + 1, 8
    layer = RelGATv2Conv(dim, dim, num_heads=2)
    h, rel, edge_weight = torch.randn(graph.num_nodes(), dim), torch.randn(num_rels, dim), _edge_weights(graph)
    layer(graph, h, rel)
    alpha = layer.last_attention
    assert alpha is not None
    src, dst = graph.edges()
    types = graph.edata["rel"]
    messages = (layer.message_src(h)[src] + layer.message_rel(rel)[types]).view(-1, 2, dim // 2)
    weighted = messages * (alpha * edge_weight.unsqueeze(1)).unsqueeze(-1)
    expected = layer.w_self(h).view(-1, 2, dim // 2).index_add(0, dst, weighted)
    out, _ = layer(graph, h, rel, edge_weight=edge_weight)
    torch.testing.assert_close(out, expected.flatten(1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(layer.last_attention, alpha)


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_unit_edge_weights_leave_the_encoder_unchanged_and_have_gradients(
    plugin: str, build_model: Callable[..., KGModel], graph: dgl.DGLGraph
) -> None:
    model = build_model(plugin, num_layers=2).eval()
    assert type(model).accepts_edge_weight and model.receptive_field() == 2
    plain, _ = model.encode(graph)
    weight = torch.ones(graph.num_edges(), requires_grad=True)
    weighted, _ = model.encode(graph, edge_weight=weight)
    torch.testing.assert_close(weighted, plain)
    weighted[0].sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="edge_weight has shape"):
        model.encode(graph, edge_weight=torch.ones(3))
    _, _, blocks = dgl.dataloading.MultiLayerFullNeighborSampler(2).sample_blocks(graph, torch.arange(3))
    with pytest.raises(ValueError, match="1 edge weight tensors for 2 blocks"):
        model.encode(blocks, edge_weight=[torch.ones(blocks[0].num_edges())])
    dropping = build_model(plugin, num_layers=2, edge_dropout=0.2).train()
    with pytest.raises(ValueError, match="edge dropout"):
        dropping.encode(graph, edge_weight=torch.ones(graph.num_edges()))
