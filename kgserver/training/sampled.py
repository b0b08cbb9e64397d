"""Neighbour-sampled mini-batch training for graphs too large to encode whole.

Each step takes a batch of message-graph edges as prediction targets (edge
``i + n`` is the inverse of edge ``i``, so both directions are trained), samples
a GraphSAGE-style neighbourhood of their endpoints and of corrupt tails, and
encodes only those blocks. The corrupt tails come from a pool of uniformly drawn
entities shared by the step's edges (:class:`SharedUniform`), so a step encodes
at most ``2 x batch + pool`` entities and scores each query against at most
``batch + pool`` candidates however many the graph has: a step's cost, and an
epoch's per training triple, stay flat as the graph grows. The targets and their
inverses are excluded from the sampled neighbourhoods (``exclude="reverse_id"``),
so the model cannot read an answer off its own input. Without every entity's
embedding at hand, the loss is the sampled-negatives one, whatever the plugin's
``training_mode``.

Under data-parallel training DGL's own loader shards the edges
(``use_ddp=True``: each rank a fixed share, shuffled locally, padded to equal
length) and each rank takes ``batch_size / world_size`` of them per step, so
the ranks together take about as many steps per epoch as one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dgl
import torch
from torch import Tensor

from kgserver.registry import KGModel
from kgserver.training.losses import Objective, negatives_loss
from kgserver.training.step import Step


def reverse_edge_ids(num_edges: int, device: torch.device | str = "cpu") -> Tensor:
    """Edge ``i``'s inverse in a message graph of ``num_edges`` (train edges, then inverses)."""
    half = num_edges // 2
    return torch.cat([torch.arange(half, num_edges), torch.arange(0, half)]).to(device)


class SharedUniform:
    """DGL negative sampler: ``k`` corrupt tails per edge, drawn uniformly from a pool of
    ``pool`` entities that is itself drawn uniformly (with replacement) once per batch.

    Each edge's negatives are still uniform over all entities, as with DGL's
    ``Uniform(k)``; what changes is that the batch's edges share them, so the
    step has at most ``pool`` distinct negatives to encode and score instead of
    up to ``batch x k``. Draws from torch's global generator, as DGL's samplers do.
    """

    def __init__(self, k: int, pool: int) -> None:
        if k < 1 or pool < 1:
            raise ValueError(f"negatives per edge and pool size must be positive, got {k} and {pool}")
        self.k, self.pool = k, pool

    def __call__(self, graph: dgl.DGLGraph, eids: Tensor) -> tuple[Tensor, Tensor]:
        sources, _ = graph.find_edges(eids)
        pool = torch.randint(graph.num_nodes(), (self.pool,), dtype=sources.dtype, device=sources.device)
        picks = torch.randint(self.pool, (len(eids) * self.k,), device=sources.device)
        return sources.repeat_interleave(self.k), pool[picks]


def edge_loader(
    graph: dgl.DGLGraph,
    fanouts: tuple[int, ...],
    batch_size: int,
    num_negatives: int,
    negative_pool: int,
    *,
    use_ddp: bool = False,
) -> dgl.dataloading.DataLoader:
    """Batches ``(input_nodes, pair_graph, negative_pair_graph, blocks)`` over every edge.

    Shuffling and the negatives draw from torch's global generator and neighbour
    sampling from DGL's, both seeded by :func:`~kgserver.training.runtime.seed_everything`.
    ``use_ddp`` gives this rank only its share of the edges (the process group
    must be up).
    """
    if graph.num_edges() % 2:
        raise ValueError("a message graph has an even number of edges (each edge and its inverse)")
    sampler = dgl.dataloading.as_edge_prediction_sampler(
        dgl.dataloading.NeighborSampler(list(fanouts)),
        exclude="reverse_id",
        reverse_eids=reverse_edge_ids(graph.num_edges(), graph.device),
        negative_sampler=SharedUniform(num_negatives, negative_pool),
    )
    return dgl.dataloading.DataLoader(
        graph,
        torch.arange(graph.num_edges(), device=graph.device),
        sampler,
        batch_size=batch_size,
        shuffle=True,
        drop_last=False,
        num_workers=0,
        use_ddp=use_ddp,
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
        negative_pool: int,
        objective: Objective,
        world_size: int = 1,
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        self.model, self.graph = model, graph
        self.num_negatives, self.objective = num_negatives, objective
        per_rank = -(-batch_size // world_size)
        self.loader = edge_loader(graph, fanouts, per_rank, num_negatives, negative_pool, use_ddp=world_size > 1)

    def steps(self) -> int:
        """Steps in an epoch (this rank's batches)."""
        return len(self.loader)

    def batches(self) -> Iterator[Step]:
        """One epoch over this rank's message-graph edges, one step per sampled batch."""
        relation_of_edge = self.graph.edata["rel"]
        for _input_nodes, pairs, negative_pairs, blocks in self.loader:
            sources, targets = pairs.edges()
            negative_sources, negative_targets = negative_pairs.edges()
            negative_targets = negative_targets.view(len(sources), self.num_negatives)
            if not torch.equal(negative_sources.view(len(sources), -1)[:, 0], sources):
                raise RuntimeError("DGL's negative sampler no longer lists each edge's negatives together")
            relations = relation_of_edge[pairs.edata[dgl.EID]]
            weight = self.objective.normaliser(len(sources), len(sources))
            yield Step(len(sources), weight, self._loss(blocks, sources, relations, targets, negative_targets))

    def _loss(
        self, blocks: list[dgl.DGLGraph], sources: Tensor, relations: Tensor, targets: Tensor, negatives: Tensor
    ) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            entity_emb, relation_emb = self.model.encode(blocks)
            return negatives_loss(
                self.objective,
                self.model,
                entity_emb[sources],
                relation_emb[relations],
                entity_emb,
                targets,
                negatives,
            )

        return loss
