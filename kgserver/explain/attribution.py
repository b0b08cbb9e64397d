"""How much a prediction depends on each message edge of its neighbourhood.

What is explained is the score of ``t`` for ``(h, r, ?)`` above a baseline, the
score of the average entity as the tail: ``s(h, r, t) - s(h, r, mean_e e)``, with
``h`` and ``t`` encoded from their neighbourhood (which gives them their
full-graph embeddings). The baseline keeps an edge that lifts every candidate
alike (shifting ``h``'s embedding along a direction all tails share) from being
credited; only lifting ``t`` above the others counts. For a decoder linear in
the tail (ComplEx, DistMult, ConvE) it is exactly the margin over the mean score
of all candidates, at the cost of scoring one extra tail.

Two methods, one meaning: the weight of an edge estimates how much the score
above the baseline drops when the edge's message is taken away.

* ``gradient`` (plugins with ``accepts_edge_weight``): every message is
  multiplied by a weight ``w_e = 1`` and the weight of an edge is
  ``d score / d w_e``, the first-order change as ``w_e`` goes from 1 to 0 (as
  NBFNet's visualisation ranks edges). One forward and one backward pass over
  the neighbourhood, whatever its size.
* ``masking`` (every plugin): the edge is removed and the neighbourhood encoded
  again; its weight is the score with it minus the score without it.
  One forward pass per edge, so it is bounded by ``max_masked_edges``.
"""

from __future__ import annotations

from dataclasses import dataclass

import dgl
import torch
from torch import Tensor

from kgserver.errors import ExplanationUnavailable
from kgserver.explain.neighbourhood import Neighbourhood
from kgserver.registry import KGModel


@dataclass(frozen=True)
class Prediction:
    """The prediction being explained, ``(head, relation, tail)``, read from encodings of ``around``;
    ``baseline`` is the mean full-graph entity embedding (``[1, d]``)."""

    model: KGModel
    head: int
    relation: int
    tail: int
    around: Neighbourhood
    baseline: Tensor

    def score(self, blocks: list[dgl.DGLGraph], edge_weight: list[Tensor] | None = None) -> Tensor:
        """The triple's score above the baseline with ``h`` and ``t`` encoded from ``blocks`` (``around``'s
        blocks or a variant with the same seeds); ``edge_weight`` only for plugins that accept it."""
        if edge_weight is None:
            entity_emb, relation_emb = self.model.encode(blocks)
        else:
            entity_emb, relation_emb = self.model.encode(blocks, edge_weight=edge_weight)
        h, t = self.around.position(self.head), self.around.position(self.tail)
        relation = relation_emb[self.relation : self.relation + 1]
        tail_and_baseline = torch.cat([entity_emb[t : t + 1], self.baseline])
        scores = self.model.score(entity_emb[h : h + 1], relation, tail_and_baseline)
        return scores[0, 0] - scores[0, 1]


def gradient_weights(prediction: Prediction) -> Tensor:
    """``d score / d w_e`` at ``w = 1`` for each edge of ``around.edge_ids``."""
    around = prediction.around
    with torch.enable_grad():
        weight = torch.ones(len(around.edge_ids), requires_grad=True)
        score = prediction.score(around.blocks, [weight[positions] for positions in around.block_edges])
        (gradient,) = torch.autograd.grad(score, weight, allow_unused=True)
    return torch.zeros_like(weight) if gradient is None else gradient.detach()


def masking_weights(prediction: Prediction, max_masked_edges: int) -> Tensor:
    """The score with each edge of ``around.edge_ids`` minus the score without it."""
    around = prediction.around
    if len(around.edge_ids) > max_masked_edges:
        raise ExplanationUnavailable(
            f"the neighbourhood of this triple has {len(around.edge_ids)} message edges; explaining a model "
            f"without edge weights (plugin {prediction.model.name!r}) removes them one at a time and is "
            f"limited to {max_masked_edges}"
        )
    with torch.no_grad():
        full = prediction.score(around.blocks)
        without = [prediction.score(around.without_edge(position)) for position in range(len(around.edge_ids))]
    return full - torch.stack(without) if without else torch.zeros(0)


def attention_per_layer(model: KGModel, around: Neighbourhood) -> Tensor:
    """``[len(edge_ids), layers]``: each edge's attention (mean over heads) in each layer's
    block, 0 where a layer's block does not hold the edge; read after an ``encode`` of
    ``around.blocks``."""
    layers = model.attention()
    table = torch.zeros(len(around.edge_ids), len(layers))
    for index, (attention, positions) in enumerate(zip(layers, around.block_edges)):
        table[positions, index] = attention.detach().float().mean(dim=1)
    return table
