"""The part of the message graph a triple's score depends on, as message-flow blocks.

An ``L``-layer encoder computes an entity's embedding from its ``L``-hop
in-neighbourhood. The score of ``(h, r, t)`` therefore depends only on the
in-edges of the nodes within ``L - 1`` hops of ``h`` and ``t``: the blocks a full
neighbour sampler draws for the seeds ``{h, t}``. They are drawn from the
``L``-hop in-subgraph (``dgl.khop_in_subgraph``), which holds every one of those
edges, so no step touches more than the neighbourhood; encoding them gives
``h`` and ``t`` exactly the embeddings the whole graph gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import dgl
import torch
from torch import Tensor


@dataclass(frozen=True)
class Neighbourhood:
    """Blocks (one per layer) that compute the seeds' embeddings, and the message edges they use.

    ``edge_ids`` are the message-graph ids of every edge in any block (sorted,
    unique); ``block_edges[i]`` gives, for each edge of ``blocks[i]``, its position
    in ``edge_ids``. ``seeds`` are the entities whose embeddings the last block
    outputs, in that order.
    """

    blocks: list[dgl.DGLGraph]
    edge_ids: Tensor
    block_edges: list[Tensor]
    seeds: Tensor
    local: dgl.DGLGraph
    """The ``L``-hop in-subgraph the blocks were drawn from (node and edge ids in ``ndata``/``edata``)."""
    local_seeds: Tensor

    def position(self, entity: int) -> int:
        """Row of ``entity`` in the encoder's output for these blocks."""
        return int((self.seeds == entity).nonzero()[0, 0])

    def without_edge(self, position: int) -> list[dgl.DGLGraph]:
        """The blocks of the same seeds once message edge ``edge_ids[position]`` is removed."""
        local_edge = (self.local.edata[dgl.EID] == self.edge_ids[position]).nonzero()[:, 0]
        return _blocks(dgl.remove_edges(self.local, local_edge), self.local_seeds, len(self.blocks))


def neighbourhood(graph: dgl.DGLGraph, entities: list[int], hops: int) -> Neighbourhood:
    """The blocks that encode ``entities`` with a ``hops``-layer encoder over ``graph``."""
    if hops < 1:
        raise ValueError(f"hops must be at least 1, got {hops}")
    seeds = torch.tensor(list(dict.fromkeys(entities)), dtype=torch.int64)
    local, local_seeds = dgl.khop_in_subgraph(graph, seeds, k=hops)
    blocks = _blocks(local, local_seeds, hops)
    block_ids = [block.edata[dgl.EID] for block in blocks]
    edge_ids = torch.unique(torch.cat(block_ids))
    block_edges = [torch.searchsorted(edge_ids, ids) for ids in block_ids]
    return Neighbourhood(blocks, edge_ids, block_edges, seeds, local, local_seeds)


def _blocks(source: dgl.DGLGraph, local_seeds: Tensor, hops: int) -> list[dgl.DGLGraph]:
    """Full-neighbour blocks of ``local_seeds`` drawn from ``source`` (an in-subgraph, possibly
    with edges removed), carrying the node and edge ids of the whole message graph."""
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(hops)
    _, _, blocks = sampler.sample_blocks(source, local_seeds)
    node_ids, edge_ids = source.ndata[dgl.NID], source.edata[dgl.EID]
    for block in blocks:
        block.srcdata[dgl.NID] = node_ids[block.srcdata[dgl.NID]]
        block.dstdata[dgl.NID] = node_ids[block.dstdata[dgl.NID]]
        block.edata[dgl.EID] = edge_ids[block.edata[dgl.EID]]
    return list(blocks)

