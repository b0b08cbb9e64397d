"""Graph helpers shared by the encoders: DropEdge, and edges grouped by destination and relation.

Both work on full graphs and on sampled blocks alike.
"""

from __future__ import annotations

from typing import Any

import dgl
import dgl.function as fn
import torch
from torch import Tensor


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


class RelationGroups:
    """The edges of a graph or block grouped by (destination node, relation type).

    A message ``f(h_u, e_r)`` that is linear in ``h_u`` can be summed per group
    before the relation is applied: ``sum_u f(h_u, e_r) = f(sum_u h_u, e_r)``. One
    sparse sum of the source features per group, with no per-edge tensor, then
    ``f`` once per group instead of once per edge; a knowledge graph has several
    edges per group (CoDEx-S: 65,776 message edges in 11,867 groups).

    Groups are ordered by relation (then destination), so the groups of one relation
    are one contiguous slice and :meth:`times_relation` applies each relation's
    row once per slice.

    With ``edge_weight`` (``[E]``) every sum is weighted: a source contributes
    ``w_e h_u`` and ``size`` counts ``sum w_e`` (the explanation hook).
    """

    def __init__(self, graph: dgl.DGLGraph, num_types: int, edge_weight: Tensor | None = None) -> None:
        src, dst = graph.edges()
        self.num_dst_nodes = graph.num_dst_nodes()
        keys, group_of_edge = torch.unique(graph.edata["rel"] * self.num_dst_nodes + dst, return_inverse=True)
        self.dst = keys % self.num_dst_nodes
        self.rel = keys // self.num_dst_nodes
        self._relation_sizes = torch.bincount(self.rel, minlength=num_types).tolist()
        self._gather = dgl.create_block(
            (src, group_of_edge), num_src_nodes=graph.num_src_nodes(), num_dst_nodes=len(keys), device=graph.device
        )
        self._edge_weight = edge_weight
        if edge_weight is None:
            self.size: Tensor = self._gather.in_degrees()
        else:
            self.size = edge_weight.new_zeros(len(keys)).index_add(0, group_of_edge, edge_weight)
        """Edges per group (their total weight when weighted)."""

    def __len__(self) -> int:
        return len(self.dst)

    def sum_sources(self, features: Tensor) -> Tensor:
        """``[G, ...]``: the sum of each group's source-node ``features`` (``[N_src, ...]``)."""
        with self._gather.local_scope():
            self._gather.srcdata["h"] = features
            if self._edge_weight is None:
                self._gather.update_all(fn.copy_u("h", "m"), fn.sum("m", "s"))
            else:
                self._gather.edata["w"] = self._edge_weight.view(-1, *([1] * (features.dim() - 1)))
                self._gather.update_all(fn.u_mul_e("h", "w", "m"), fn.sum("m", "s"))
            return self._gather.dstdata["s"]

    def times_relation(self, features: Tensor, relation_features: Tensor) -> Tensor:
        """``[G, ...]``: each group's ``features`` times the row of ``relation_features`` (``[T, ...]``)
        of its relation, broadcast.

        One product per relation over its slice of groups, against one row: no ``[G, ...]``
        copy of relation rows is gathered, and a row's gradient is a sum over its slice,
        where a gathered copy's backward accumulates ``G`` rows into ``T`` by index (serial
        on the CPU; bench/RESULTS.md, section Training, has the epochs before and after).
        """
        return _TimesRelation.apply(features, relation_features, self._relation_sizes)

    def sum_to_destinations(self, messages: Tensor, slot: Tensor, num_slots: int) -> Tensor:
        """``[N_dst, num_slots, ...]``: each group's message (``[G, ...]``) summed into slot
        ``slot[g]`` of its destination node."""
        groups = torch.arange(len(self), device=messages.device)
        scatter = dgl.create_block(
            (groups, self.dst * num_slots + slot),
            num_src_nodes=len(self),
            num_dst_nodes=self.num_dst_nodes * num_slots,
            device=messages.device,
        )
        with scatter.local_scope():
            scatter.srcdata["m"] = messages
            scatter.update_all(fn.copy_u("m", "m"), fn.sum("m", "s"))
            return scatter.dstdata["s"].view(self.num_dst_nodes, num_slots, *messages.shape[1:])


class _TimesRelation(torch.autograd.Function):
    """``features * relation_features[relation of each row]`` for rows sorted by relation, ``sizes``
    rows per relation, written slice by slice (see :meth:`RelationGroups.times_relation`).

    Real or complex: the gradients conjugate the other factor, torch's convention for complex
    products (a no-op on real tensors)."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, relation_features: Tensor, sizes: list[int]) -> Tensor:
        shape = torch.broadcast_shapes(features.shape, (features.shape[0], *relation_features.shape[1:]))
        out = features.new_empty(shape, dtype=torch.result_type(features, relation_features))
        for part, row, into in zip(features.split(sizes), relation_features.unbind(0), out.split(sizes)):
            torch.mul(part, row, out=into)
        ctx.save_for_backward(features, relation_features)
        ctx.sizes = sizes
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        features, relation_features = ctx.saved_tensors
        rows = relation_features.unbind(0)
        grad_features = grad_relations = None
        if ctx.needs_input_grad[0]:
            if features.shape == grad.shape and features.dtype == grad.dtype:
                grad_features = torch.empty_like(grad)
                for g, row, into in zip(grad.split(ctx.sizes), rows, grad_features.split(ctx.sizes)):
                    torch.mul(g, row.conj(), out=into)
            else:  # features broadcast along the row's dimensions
                grad_features = torch.cat(
                    [
                        (g * row.conj()).sum_to_size(part.shape)
                        for g, part, row in zip(grad.split(ctx.sizes), features.split(ctx.sizes), rows)
                    ]
                ).to(features.dtype)
        if ctx.needs_input_grad[1]:
            grad_relations = torch.stack(
                [
                    (g * part.conj()).sum(0).sum_to_size(row.shape)
                    for g, part, row in zip(grad.split(ctx.sizes), features.split(ctx.sizes), rows)
                ]
            ).to(relation_features.dtype)
        return grad_features, grad_relations, None
