"""Neighbour-sampled mini-batch training for graphs too large to encode whole.

Each step takes a batch of message-graph edges as prediction targets (edge
``i + n`` is the inverse of edge ``i``, so both directions are trained), samples
a GraphSAGE-style neighbourhood of their endpoints and of uniformly sampled
corrupt tails, and encodes only those blocks. The targets and their inverses are
excluded from the sampled neighbourhoods (``exclude="reverse_id"``), so the
model cannot read an answer off its own input. Without every entity's
embedding at hand, the loss is the sampled-negatives one, whatever the plugin's
``training_mode``.
"""

from __future__ import annotations

from typing import Iterator

import dgl
import torch
from torch import Tensor

from kgserver.registry import KGModel
from kgserver.training.losses import Objective, negatives_loss


def reverse_edge_ids(num_edges: int, device: torch.device | str = "cpu") -> Tensor:
    """Edge ``i``'s inverse in a message graph of ``num_edges`` (train edges, then inverses)."""
    half = num_edges // 2
    return torch.cat([torch.arange(half, num_edges), torch.arange(0, half)]).to(device)


def edge_loader(
    graph: dgl.DGLGraph, fanouts: tuple[int, ...], batch_size: int, num_negatives: int
) -> dgl.dataloading.DataLoader:
    """Batches ``(input_nodes, pair_graph, negative_pair_graph, blocks)`` over every edge.

    Shuffling draws from torch's global generator and neighbour sampling from
    DGL's, both seeded by :func:`~kgserver.training.runtime.seed_everything`.
    """
    if graph.num_edges() % 2:
        raise ValueError("a message graph has an even number of edges (each edge and its inverse)")
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.NeighborSampler(list(fanouts)),
        exclude="reverse_id",
        reverse_eids=reverse_edge_ids(graph.num_edges(), graph.device),
        negative_sampler=dgl.dataloading.negative_sampler.Uniform(num_negatives),
    )
    return dgl.dataloading.DataLoader(
        graph,
        torch.arange(graph.num_edges(), device=graph.device),
        sampler,
        batch_size=batch_size,
        shuffle=True,
        drop_last=False,
        num_workers=0,
    )


class SampledEdges:
    """Mini-batches of target edges with their sampled blocks and negatives."""

    def __init__(
        self,
        model: KGModel,
        graph: dgl.DGLGraph,
        *,
        fanouts: tuple[int, ...],
        batch_size: int,
        num_negatives: int,
        objective: Objective,
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        self.model, self.graph = model, graph
        self.num_negatives, self.objective = num_negatives, objective
        self.loader = edge_loader(graph, fanouts, batch_size, num_negatives)

    def batches(self) -> Iterator[tuple[Tensor, int]]:
        """One epoch over every message-graph edge: ``(loss, number of edges)`` per batch."""
        relation_of_edge = self.graph.edata["rel"]
        for _input_nodes, pairs, negative_pairs, blocks in self.loader:
            entity_emb, relation_emb = self.model.encode(blocks)
            sources, targets = pairs.edges()
            negative_sources, negative_targets = negative_pairs.edges()
            negative_targets = negative_targets.view(len(sources), self.num_negatives)
            if not torch.equal(negative_sources.view(len(sources), -1)[:, 0], sources):
                raise RuntimeError("DGL's negative sampler no longer lists each edge's negatives together")
            relations = relation_of_edge[pairs.edata[dgl.EID]]
            loss = negatives_loss(
                self.objective,
                self.model,
                entity_emb[sources],
                relation_emb[relations],
                entity_emb,
                targets,
                negative_targets,
            )
            yield loss, len(sources)
