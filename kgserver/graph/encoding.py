"""Encode every entity of a large graph in bounded memory: chunk by chunk of entities.

``model.encode(graph)`` over the whole message graph holds a few per-edge
``[E, d]`` tensors at once (messages, attention, their products): 20M edges at
dimension 320 is tens of GiB. An ``L``-layer encoder computes an entity from its
``L``-hop in-neighbourhood, so the same embeddings come from full-neighbour
blocks (``dgl.dataloading.MultiLayerFullNeighborSampler``) of consecutive chunks
of entities, each holding about :data:`EDGE_ELEMENTS` edge-dimension numbers per
layer. Graphs under that size, and plugins that declare no receptive field, are
encoded whole, exactly as before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

EDGE_ELEMENTS = 2**28  # edges x dimension per chunk: 1 GiB per float32 per-edge tensor


def encode_in_chunks(model: Any, graph: Any) -> tuple[Tensor, Tensor]:
    """``model.encode(graph)`` (call it without gradients) for a DGL message graph, chunked when it
    has more than ``EDGE_ELEMENTS / embedding_dim`` edges and the model declares its receptive
    field (a model object without ``receptive_field``, such as a test's scorer, is encoded whole)."""
    declared = getattr(model, "receptive_field", None)
    hops = declared() if declared is not None else None
    edges_per_chunk = 0 if hops is None else max(1, EDGE_ELEMENTS // max(1, model.hparams.embedding_dim))
    if hops is None or graph.num_edges() <= edges_per_chunk:
        whole: tuple[Tensor, Tensor] = model.encode(graph)
        return whole
    import dgl  # only here: evaluation of small graphs does not load DGL through this module

    nodes = graph.num_nodes()
    chunk = max(1, nodes * edges_per_chunk // graph.num_edges())
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(hops)
    entity_emb: Tensor | None = None
    relation_emb: Tensor | None = None
    for start in range(0, nodes, chunk):
        seeds = torch.arange(start, min(nodes, start + chunk), device=graph.device)
        _, _, blocks = sampler.sample_blocks(graph, seeds)
        part, relation_emb = model.encode(list(blocks))
        if entity_emb is None:
            entity_emb = part.new_empty(nodes, part.shape[1])
        entity_emb[start : start + len(seeds)] = part
    assert entity_emb is not None and relation_emb is not None  # the graph has nodes: one chunk ran
    return entity_emb, relation_emb
