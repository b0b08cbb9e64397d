"""Relation-aware GATv2 layer (after Brody et al. 2021).

The attention logit of an edge ``(u, r, v)`` for head ``k`` is
``a_k^T LeakyReLU(W [h_u || h_v || e_r])``: the nonlinearity comes before the
attention vector, which is what makes GATv2's attention dynamic (the ranking of
neighbours depends on the receiving node). ``W`` applied to a concatenation is
the sum of three blocks, so ``W_src h_u`` and ``W_dst h_v`` are computed once
per node and ``W_rel e_r`` once per relation; only their sum and the
nonlinearity are per edge. ``W`` maps to ``attention_dim`` (default: the layer
size), which may be smaller than the messages: the per-edge work of attention
shrinks with it while the messages keep their width. Logits are normalised with
``edge_softmax`` over each node's incoming edges, messages ``W_m [h_u || e_r]``
carry the relation, and::

    h_v' = act(W_self h_v + concat_k sum_{(u, r, v)} alpha_k(u, r, v) W_m^k [h_u || e_r])

The message sum is split the same way: ``sum alpha W_m^src h_u`` is one fused
``u_mul_e`` over the edges, and ``sum alpha W_m^rel e_r`` groups the attention
mass per (node, relation) first, so no per-edge message is materialised.

The weights of the last forward pass are kept in ``last_attention`` (``[E, heads]``,
in the order of the graph's edges) so that predictions can be explained. Optional
per-edge weights ``w_e`` multiply each edge's attention-weighted message (after
the softmax, so ``last_attention`` stays the model's own attention).
"""

from __future__ import annotations

from collections.abc import Callable

import dgl
import dgl.function as fn
import torch
from dgl.nn.functional import edge_softmax
from torch import Tensor, nn
from torch.nn import functional as F


class RelGATv2Conv(nn.Module):
    """One multi-head relation-aware GATv2 layer; ``out_dim`` is split over ``num_heads``."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_heads: int = 4,
        negative_slope: float = 0.2,
        attention_dropout: float = 0.0,
        activation: Callable[[Tensor], Tensor] | None = None,
        attention_dim: int | None = None,
    ) -> None:
        super().__init__()
        attention_dim = out_dim if attention_dim is None else attention_dim
        for size, what in ((out_dim, "the layer size"), (attention_dim, "attention_dim")):
            if size % num_heads:
                raise ValueError(f"num_heads {num_heads} must divide {what} {size}")
        self.num_heads, self.head_dim = num_heads, out_dim // num_heads
        self.attend_src = nn.Linear(in_dim, attention_dim, bias=False)
        self.attend_dst = nn.Linear(in_dim, attention_dim, bias=False)
        self.attend_rel = nn.Linear(in_dim, attention_dim)
        self.attention = nn.Parameter(torch.empty(1, num_heads, attention_dim // num_heads))
        self.message_src = nn.Linear(in_dim, out_dim, bias=False)
        self.message_rel = nn.Linear(in_dim, out_dim)
        self.w_self = nn.Linear(in_dim, out_dim)
        self.negative_slope = negative_slope
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.activation = activation
        self.last_attention: Tensor | None = None
        nn.init.xavier_normal_(self.attention)

    def forward(
        self, graph: dgl.DGLGraph, h_src: Tensor, rel: Tensor, edge_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Attend over incoming edges; relation embeddings pass through unchanged."""
        heads = (-1, self.num_heads, self.head_dim)
        attention_heads = (-1, *self.attention.shape[1:])
        h_dst = h_src[: graph.num_dst_nodes()]
        rel_types = graph.edata["rel"]
        with graph.local_scope():
            graph.srcdata["a_src"] = self.attend_src(h_src).view(attention_heads)
            graph.srcdata["m_src"] = self.message_src(h_src).view(heads)
            graph.dstdata["a_dst"] = self.attend_dst(h_dst).view(attention_heads)
            graph.edata["a_rel"] = self.attend_rel(rel)[rel_types].view(attention_heads)
            graph.apply_edges(fn.u_add_v("a_src", "a_dst", "a_nodes"))
            # in place: each of these [E, attention_dim] tensors is hundreds of MB on a real graph
            hidden = F.leaky_relu_(graph.edata["a_nodes"].add_(graph.edata["a_rel"]), self.negative_slope)
            alpha = edge_softmax(graph, (hidden * self.attention).sum(-1))  # [E, heads]
            self.last_attention = alpha.detach()
            alpha = self.attention_dropout(alpha)
            if edge_weight is not None:
                alpha = alpha * edge_weight.unsqueeze(1)
            graph.edata["alpha"] = alpha.unsqueeze(-1)
            # under autocast the messages come out of a bfloat16 product; DGL sums one dtype
            graph.srcdata["m_src"] = graph.srcdata["m_src"].to(alpha.dtype)
            graph.update_all(fn.u_mul_e("m_src", "alpha", "m"), fn.sum("m", "from_nodes"))
            from_nodes = graph.dstdata["from_nodes"]
            _, dst = graph.edges()
        # sum over edges of alpha * W_m^rel e_r, grouped as (attention mass per node and relation) x relation
        mass = alpha.new_zeros(graph.num_dst_nodes(), rel.shape[0], self.num_heads)
        mass = mass.index_put((dst, rel_types), alpha, accumulate=True)
        from_relations = torch.einsum("nrk,rkd->nkd", mass, self.message_rel(rel).view(heads))
        out = (from_nodes + from_relations).flatten(1) + self.w_self(h_dst)
        if self.activation is not None:
            out = self.activation(out)
        return out, rel

