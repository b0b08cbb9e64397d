"""CompGCN layer (Vashishth et al. 2020): nodes and relations updated together.

For every edge ``(u, r, v)`` the source is composed with the relation,
``phi(h_u, e_r)``, and transformed by a weight chosen by the edge's direction:
``W_O`` for original edges (relation ``< R``), ``W_I`` for inverse edges and
``W_S`` for the node itself composed with a learned self-loop relation::

    h_v' = act(BN((W_O m_O(v) + W_I m_I(v) + W_S phi(h_v, e_loop)) / 3 + b))
    e_r' = W_rel e_r

where ``m_O(v)`` / ``m_I(v)`` sum the composed messages of each direction,
divided by ``v``'s in-degree (a mean that a sampled block reproduces exactly).
Optional per-edge weights multiply each edge's composed message (to explain
predictions); the in-degree stays a count of edges.

Because ``W_O`` and ``W_I`` are linear they are applied after aggregation, once
per node rather than once per edge. Every composition is linear in ``h_u``, so
the sources are first summed per (destination, relation) group
(:class:`~kgserver_plugins.graphs.RelationGroups`), the relation is applied
once per group, and the groups are summed into the destination's slot for
their direction, ``[N, 2, d]``: no per-edge message is materialised. ``corr``
is aggregated in the frequency domain (``corr(a, b) = irfft(conj(rfft a) *
rfft b)`` is linear in each argument), so FFTs run per node and per relation,
never per edge or group.
"""

from __future__ import annotations

from collections.abc import Callable

import dgl
import torch
from torch import Tensor, nn

from kgserver_plugins.graphs import RelationGroups

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

    def forward(
        self, graph: dgl.DGLGraph, h_src: Tensor, rel: Tensor, edge_weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Update the destination nodes and every relation embedding."""
        neighbours = self.w_direction(self.directional_mean(graph, h_src, rel, edge_weight).flatten(1))
        h_dst = h_src[: graph.num_dst_nodes()]
        itself = self.w_self(compose(h_dst, self.loop_relation, self.composition))
        out = self.norm((neighbours + itself) / 3 + self.bias)
        if self.activation is not None:
            out = self.activation(out)
        return out, self.w_relation(rel)

    def directional_mean(
        self, graph: dgl.DGLGraph, h_src: Tensor, rel: Tensor, edge_weight: Tensor | None = None
    ) -> Tensor:
        """``[N_dst, 2, d]``: the composed incoming messages (times their edge weights, if
        given) of original (0) and inverse (1) edges, summed per direction and divided by
        the node's in-degree."""
        groups = RelationGroups(graph, rel.shape[0], edge_weight)
        if self.composition == "corr":
            messages = self._frequency_domain_correlation(groups, h_src, rel)
        elif self.composition == "mult":
            messages = groups.times_relation(groups.sum_sources(h_src), rel)
        else:  # sub: sum(h_u - e_r) = sum(h_u) - (number of edges) e_r
            messages = groups.sum_sources(h_src) - groups.times_relation(groups.size.unsqueeze(1).to(rel.dtype), rel)
        direction = (groups.rel >= self.num_base_rels).long()
        per_direction = groups.sum_to_destinations(messages, direction, 2)
        in_degrees = graph.in_degrees().clamp(min=1).to(per_direction.dtype)
        per_direction = per_direction / in_degrees.view(-1, *([1] * (per_direction.dim() - 1)))
        if self.composition == "corr":  # per_direction holds conj(sum conj(H_u) R_r) as [..., k, 2]
            spectrum = torch.view_as_complex(per_direction).conj()
            return torch.fft.irfft(spectrum, n=h_src.shape[-1], dim=-1)
        return per_direction

    @staticmethod
    def _frequency_domain_correlation(groups: RelationGroups, h_src: Tensor, rel: Tensor) -> Tensor:
        """Per group, the conjugate of ``sum_u conj(H_u) R_r``, which is ``(sum_u H_u) conj(R_r)``,
        as ``[G, k, 2]`` (real and imaginary parts).

        ``H_u`` and ``R_r`` are the spectra (rfft) of source and relation. The product is
        linear in ``H_u``, so the spectra are summed per group first, as two real channels
        (DGL sums real tensors); the conjugate is undone after the sum to destinations.
        The FFTs are per node and per relation only.
        """
        node_sums = groups.sum_sources(torch.view_as_real(torch.fft.rfft(h_src, dim=-1)))  # [G, k, 2]
        relation_spectra = torch.fft.rfft(rel, dim=-1).conj()
        return torch.view_as_real(groups.times_relation(torch.view_as_complex(node_sums), relation_spectra))
