"""Explain one prediction: its score, its filtered rank, the evidence edges and paths behind it.

An :class:`Explainer` is built once per model version around the message graph
the model was trained on and the model's full-graph embeddings (the ones that
answer predictions). Each explanation then works on the triple's neighbourhood
only (:mod:`kgserver.explain.neighbourhood`): the attribution re-encodes those
few blocks, never the whole graph.

A message edge ``i`` of the graph is training triple ``i mod n`` (edge ``i + n``
is the inverse of edge ``i``), so an evidence triple's weight is the sum of the
weights of its two message edges.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import dgl
import torch
from torch import Tensor

from kgserver.errors import ExplanationUnavailable
from kgserver.explain.attribution import (
    Prediction,
    attention_per_layer,
    gradient_weights,
    masking_weights,
)
from kgserver.explain.neighbourhood import Neighbourhood, neighbourhood
from kgserver.explain.paths import PATH_CANDIDATES, Triple, best_paths
from kgserver.graph.index import TripleIndex
from kgserver.graph.snapshot import message_graph
from kgserver.registry import KGModel

METHODS = ("gradient", "masking")
MAX_MASKED_EDGES = 2000
"""Neighbourhood edges the masking method will remove one at a time, at most (one encoding each)."""


@dataclass(frozen=True)
class Evidence:
    """A training triple the score depends on; ``attention`` per layer when the model reports it
    (the larger of its two message edges' attention, averaged over heads)."""

    triple: Triple
    weight: float
    attention: tuple[float, ...] = ()


@dataclass(frozen=True)
class EvidencePath:
    """Triples chaining the head to the tail; ``weight`` is the smallest of theirs."""

    hops: tuple[Triple, ...]
    weight: float


@dataclass(frozen=True)
class Explanation:
    """Why ``triple`` scores as it does. ``rank`` is the tail's filtered rank for
    ``(head, relation, ?)`` (1 + the unknown candidates that score strictly higher)."""

    triple: Triple
    score: float
    rank: int
    evidence: list[Evidence]
    paths: list[EvidencePath]
    method: str


class Explainer:
    """Explanations of one model version's predictions (thread-safe; one at a time per model)."""

    def __init__(
        self,
        model: KGModel,
        train_triples: Tensor,
        *,
        embeddings: tuple[Tensor, Tensor] | None = None,
        known: TripleIndex | None = None,
        method: str | None = None,
    ) -> None:
        """``embeddings`` are the model's full-graph ``(entity_emb, relation_emb)`` (computed here
        when not given); they may cover more entities than the model was trained on (a served
        state the store extended), and so may ``train_triples``. ``known`` indexes the triples
        the filtered rank leaves out: a served version passes its own (the one ``filter_known``
        predictions use); by default it is built here, once, from ``train_triples``. ``method``
        defaults to ``gradient`` for plugins that accept edge weights, else ``masking``. The
        model is put in eval mode: explanations read it as it answers predictions."""
        hops = model.receptive_field()
        if hops is None or hops < 1:
            raise ExplanationUnavailable(
                f"model plugin {model.name!r} does not declare its receptive field, so the neighbourhood "
                "a prediction depends on is unknown"
            )
        method = method or ("gradient" if model.accepts_edge_weight else "masking")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if method == "gradient" and not model.accepts_edge_weight:
            raise ExplanationUnavailable(f"model plugin {model.name!r} does not accept edge weights")
        self.model = model.eval()
        self.hops = hops
        self.method = method
        self.train_triples = train_triples.to(torch.int64).reshape(-1, 3)
        self.num_entities = model.num_entities if embeddings is None else int(embeddings[0].shape[0])
        self.graph: dgl.DGLGraph = message_graph(self.train_triples, self.num_entities, model.num_relations)
        if embeddings is None:
            with torch.no_grad():
                embeddings = model.encode(self.graph)
        self.entity_emb, self.relation_emb = (e.detach() for e in embeddings)
        self._baseline = self.entity_emb.mean(dim=0, keepdim=True).clone()  # a normal tensor, even from inference mode
        self.known = known if known is not None else TripleIndex.build(self.train_triples, model.num_relations)
        self._lock = threading.Lock()

    def explain(self, head: int, relation: int, tail: int, k: int = 10) -> Explanation:
        """Score, filtered rank, the ``k`` heaviest evidence triples and up to ``k`` paths."""
        self._check(head, relation, tail, k)
        triple = (head, relation, tail)
        score, rank = self._score_and_rank(head, relation, tail)
        around = neighbourhood(self.graph, [head, tail], self.hops)
        prediction = Prediction(self.model, head, relation, tail, around, self._baseline)
        with self._lock:  # the model's attention is state of its last encode
            if self.method == "gradient":
                edge_weight = gradient_weights(prediction)
            else:
                edge_weight = masking_weights(prediction, MAX_MASKED_EDGES)
            attention = self._attention(around)
        evidence = self._evidence(around, edge_weight, attention, max(k, PATH_CANDIDATES))
        weighted = [(item.triple, item.weight) for item in evidence]
        paths = [EvidencePath(tuple(hops), weight) for hops, weight in best_paths(head, tail, weighted, k)]
        return Explanation(triple, score, rank, evidence[:k], paths, self.method)

    def _check(self, head: int, relation: int, tail: int, k: int) -> None:
        for what, value, size in (
            ("head", head, self.num_entities),
            ("relation", relation, self.model.num_relations),
            ("tail", tail, self.num_entities),
        ):
            if not 0 <= value < size:
                raise ValueError(f"{what} id {value} is outside [0, {size})")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")

    def _score_and_rank(self, head: int, relation: int, tail: int) -> tuple[float, int]:
        with torch.no_grad():
            scores = self.model.score(
                self.entity_emb[head : head + 1], self.relation_emb[relation : relation + 1], self.entity_emb
            )[0]
        _, known_tails = self.known.lookup(torch.tensor([head]), torch.tensor([relation]))
        competing = torch.ones_like(scores, dtype=torch.bool)
        competing[known_tails] = False
        target = scores[tail]
        return float(target), 1 + int(((scores > target) & competing).sum())

    def _attention(self, around: Neighbourhood) -> Tensor | None:
        if not self.model.reports_attention:
            return None
        with torch.no_grad():
            self.model.encode(around.blocks)
            return attention_per_layer(self.model, around)

    def _evidence(
        self, around: Neighbourhood, edge_weight: Tensor, attention: Tensor | None, limit: int
    ) -> list[Evidence]:
        """Message-edge weights summed per training triple: the ``limit`` heaviest, heaviest first."""
        count = len(self.train_triples)
        triple_ids, per_edge = torch.unique(around.edge_ids % count, return_inverse=True)
        weights = torch.zeros(len(triple_ids), dtype=torch.float64).index_add_(0, per_edge, edge_weight.double())
        order = torch.argsort(weights, descending=True, stable=True)[:limit]
        if attention is not None:
            index = per_edge.unsqueeze(1).expand_as(attention)
            table = torch.zeros(len(triple_ids), attention.shape[1]).scatter_reduce_(0, index, attention, "amax")
        rows = self.train_triples[triple_ids[order]].tolist()
        return [
            Evidence(
                (row[0], row[1], row[2]),
                float(weights[i]),
                () if attention is None else tuple(table[i].tolist()),
            )
            for row, i in zip(rows, order.tolist())
        ]
