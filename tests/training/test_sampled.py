"""Neighbour sampling for mini-batch training never shows a model the edges it predicts."""

from __future__ import annotations

import dgl
import torch

from kgserver.graph import Snapshot
from kgserver.training import seed_everything
from kgserver.training.sampled import SharedUniform, edge_loader, reverse_edge_ids


def _leaks(loader: dgl.dataloading.DataLoader, reverse: torch.Tensor) -> tuple[int, int]:
    """(batches whose blocks contain a target edge or its inverse, batches)."""
    leaking = batches = 0
    for _input_nodes, pairs, _negatives, blocks in loader:
        targets = pairs.edata[dgl.EID]
        forbidden = torch.cat([targets, reverse[targets]])
        seen = torch.cat([block.edata[dgl.EID] for block in blocks])
        assert len(seen) > 0
        leaking += int(torch.isin(seen, forbidden).any())
        batches += 1
    return leaking, batches


def test_blocks_exclude_target_edges_and_their_inverses(mirrored: Snapshot) -> None:
    seed_everything(0)
    graph = mirrored.message_graph()
    reverse = reverse_edge_ids(graph.num_edges())
    # all neighbours on every layer: without the exclusion every target edge would be in its block
    leaking, batches = _leaks(edge_loader(graph, (-1, -1), batch_size=32, num_negatives=4, negative_pool=64), reverse)
    assert batches == -(-graph.num_edges() // 32)
    assert leaking == 0


def test_the_leak_check_sees_leaks_when_nothing_is_excluded(mirrored: Snapshot) -> None:
    graph = mirrored.message_graph()
    reverse = reverse_edge_ids(graph.num_edges())
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.NeighborSampler([-1, -1]),
        negative_sampler=dgl.dataloading.negative_sampler.Uniform(4),
    )
    loader = dgl.dataloading.DataLoader(graph, torch.arange(graph.num_edges()), sampler, batch_size=32)
    leaking, batches = _leaks(loader, reverse)
    assert leaking == batches


def test_reverse_ids_pair_each_edge_with_its_inverse(mirrored: Snapshot) -> None:
    graph = mirrored.message_graph()
    reverse = reverse_edge_ids(graph.num_edges())
    src, dst = graph.edges()
    assert torch.equal(src[reverse], dst) and torch.equal(dst[reverse], src)
    rel = graph.edata["rel"]
    assert torch.equal(rel[reverse], (rel + mirrored.num_relations) % (2 * mirrored.num_relations))


def test_batches_line_up_targets_relations_and_negatives(mirrored: Snapshot) -> None:
    seed_everything(0)
    graph = mirrored.message_graph()
    loader = edge_loader(graph, (3,), batch_size=16, num_negatives=5, negative_pool=8)
    for _input_nodes, pairs, negatives, blocks in loader:
        output_ids = blocks[-1].dstdata[dgl.NID]
        assert torch.equal(output_ids, pairs.ndata[dgl.NID])
        sources, targets = pairs.edges()
        global_src, global_dst = graph.find_edges(pairs.edata[dgl.EID])
        assert torch.equal(output_ids[sources], global_src) and torch.equal(output_ids[targets], global_dst)
        negative_sources, _ = negatives.edges()
        assert torch.equal(negative_sources.view(len(sources), 5), sources.unsqueeze(1).expand(-1, 5))
        _, negative_tails = negatives.edges()
        assert len(torch.unique(negative_tails)) <= 8  # drawn from the batch's shared pool


def test_shared_negatives_are_uniform_over_all_entities() -> None:
    seed_everything(0)
    graph = dgl.graph((torch.arange(100), (torch.arange(100) + 1) % 100))
    sampler = SharedUniform(k=4, pool=16)
    tails = torch.cat([sampler(graph, torch.arange(100))[1] for _ in range(2000)])
    counts = torch.bincount(tails, minlength=100).float()
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()
    sources, batch_tails = sampler(graph, torch.tensor([3, 7]))
    assert torch.equal(sources, torch.tensor([3, 3, 3, 3, 7, 7, 7, 7]))
    assert len(torch.unique(batch_tails)) <= 16
