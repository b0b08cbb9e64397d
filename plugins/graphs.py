"""Graph helpers shared by the encoders: DropEdge that works on graphs and on blocks."""

from __future__ import annotations

import dgl
import torch


def drop_edges(graph: dgl.DGLGraph, p: float) -> dgl.DGLGraph:
    """Return ``graph`` without a random fraction ``p`` of its edges (DropEdge).

    DropEdge (Rong et al. 2020) slows over-smoothing and regularises: each
    forward pass sees a different sparser graph. Node ids and counts are kept,
    so entity embeddings still line up with the full graph. Works on a
    full graph and on a sampled block (a block stays a block, with its
    ``srcdata``/``dstdata`` ids), and keeps every edge feature.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"edge dropout must be in [0, 1), got {p}")
    keep = torch.rand(graph.num_edges(), device=graph.device) >= p
    eids = keep.nonzero().squeeze(1)
    if not graph.is_block:
        return dgl.edge_subgraph(graph, eids, relabel_nodes=False, store_ids=False)
    src, dst = graph.find_edges(eids)
    block = dgl.create_block(
        (src, dst),
        num_src_nodes=graph.num_src_nodes(),
        num_dst_nodes=graph.num_dst_nodes(),
        device=graph.device,
    )
    block.srcdata.update(graph.srcdata)
    block.dstdata.update(graph.dstdata)
    block.edata.update({key: value[eids] for key, value in graph.edata.items()})
    return block
