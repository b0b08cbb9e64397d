"""CompGCN layer (Vashishth et al. 2020): nodes and relations updated together.

For every edge ``(u, r, v)`` the source is composed with the relation,
``phi(h_u, e_r)``, and transformed by a weight chosen by the edge's direction:
``W_O`` for original edges (relation ``< R``), ``W_I`` for inverse edges and
``W_S`` for the node itself composed with a learned self-loop relation::

    h_v' = act(BN((W_O m_O(v) + W_I m_I(v) + W_S phi(h_v, e_loop)) / 3 + b))
    e_r' = W_rel e_r

where ``m_O(v)`` / ``m_I(v)`` are the incoming composed messages of each
direction averaged over ``v``'s in-degree. Because the transform is linear it is
applied after aggregation (once per node, not per edge): each edge writes its
message into its direction's slot of a ``[E, 2, d]`` tensor, one mean
aggregation gives ``[N, 2, d]``, and a single ``2d -> d`` linear map is
``[W_O W_I]``.
"""

from __future__ import annotations

from typing import Callable

import dgl
import dgl.function as fn
import torch
from torch import Tensor, nn

COMPOSITIONS = ("sub", "mult", "corr")


def circular_correlation(a: Tensor, b: Tensor) -> Tensor:
    """``(a * b)_k = sum_i a_i b_{(i + k) mod d}``, computed in O(d log d) by FFT."""
    dim = a.shape[-1]
    return torch.fft.irfft(torch.conj(torch.fft.rfft(a, dim=-1)) * torch.fft.rfft(b, dim=-1), n=dim, dim=-1)


def compose(entity: Tensor, relation: Tensor, how: str) -> Tensor:
    """CompGCN's entity-relation composition ``phi``."""
    if how == "sub":
        return entity - relation
    if how == "mult":
        return entity * relation
    if how == "corr":
        return circular_correlation(entity, relation)
    raise ValueError(f"composition must be one of {', '.join(COMPOSITIONS)}; got {how!r}")


class CompGCNConv(nn.Module):
    """One CompGCN layer; ``num_base_rels`` is ``R`` (edge types ``>= R`` are inverses)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_base_rels: int,
        composition: str = "corr",
        activation: Callable[[Tensor], Tensor] | None = torch.tanh,
        batchnorm: bool = True,
    ) -> None:
        super().__init__()
        if composition not in COMPOSITIONS:
            raise ValueError(f"composition must be one of {', '.join(COMPOSITIONS)}; got {composition!r}")
        self.composition = composition
        self.num_base_rels = num_base_rels
        self.w_direction = nn.Linear(2 * in_dim, out_dim, bias=False)  # [W_O W_I]
        self.w_self = nn.Linear(in_dim, out_dim, bias=False)
        self.w_relation = nn.Linear(in_dim, out_dim, bias=False)
        self.loop_relation = nn.Parameter(torch.empty(1, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.norm = nn.BatchNorm1d(out_dim) if batchnorm else nn.Identity()
        self.activation = activation
        for weight in (self.w_direction.weight, self.w_self.weight, self.w_relation.weight, self.loop_relation):
            nn.init.xavier_normal_(weight)

    def forward(self, graph: dgl.DGLGraph, h_src: Tensor, rel: Tensor) -> tuple[Tensor, Tensor]:
        """Update the destination nodes and every relation embedding."""
        with graph.local_scope():
            graph.srcdata["h"] = h_src
            graph.edata["r"] = rel[graph.edata["rel"]]
            graph.apply_edges(self._directed_message)
            graph.update_all(fn.copy_e("m", "m"), fn.mean("m", "agg"))
            neighbours = self.w_direction(graph.dstdata["agg"].flatten(1))
        h_dst = h_src[: graph.num_dst_nodes()]
        itself = self.w_self(compose(h_dst, self.loop_relation, self.composition))
        out = self.norm((neighbours + itself) / 3 + self.bias)
        if self.activation is not None:
            out = self.activation(out)
        return out, self.w_relation(rel)

    def _directed_message(self, edges: dgl.udf.EdgeBatch) -> dict[str, Tensor]:
        """``phi(h_u, e_r)`` in slot 0 for original edges and slot 1 for inverse edges."""
        message = compose(edges.src["h"], edges.data["r"], self.composition)
        inverse = (edges.data["rel"] >= self.num_base_rels).unsqueeze(1)
        return {"m": torch.stack([message.masked_fill(inverse, 0), message.masked_fill(~inverse, 0)], dim=1)}
