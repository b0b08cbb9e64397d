"""Filtered link-prediction evaluation of a model: encode once, rank batches of queries.

Tail prediction asks ``(h, r, ?)``; head prediction asks ``(t, r + R, ?)`` with
the inverse relation, so both go through the same decoder call. The headline
numbers (``mrr``, ``hits_at_k``, ``mean_rank``) pool both directions; the
``head_`` and ``tail_`` variants report each alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from kgserver.evaluation.ranking import RankAccumulator, filtered_ranks
from kgserver.graph.encoding import encode_in_chunks
from kgserver.graph.index import TripleIndex

ScoreFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class Evaluator:
    """Holds the filter (every known triple) once; ranks any split against it."""

    def __init__(
        self,
        all_known_triples: Tensor,
        num_entities: int,
        num_relations: int,
        *,
        batch_size: int = 256,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"evaluation batch_size must be positive, got {batch_size}")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.known = TripleIndex.build(all_known_triples.to(self.device), num_relations)

    def __call__(self, model: Any, graph: Any, triples: Tensor) -> dict[str, float]:
        """Encode ``graph`` with ``model`` (no grad, eval mode; chunked on large graphs) and rank ``triples``."""
        return self.splits(model, graph, {"": triples})[""]

    def splits(self, model: Any, graph: Any, splits: Mapping[str, Tensor]) -> dict[str, dict[str, float]]:
        """Metrics of each named split, all ranked against one encoding of ``graph``.

        One encode is most of an evaluation's cost on a large graph, so the
        final test and validation passes share it.
        """
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                entity_emb, relation_emb = encode_in_chunks(model, graph)
                return {
                    name: self.rank(model.score, entity_emb, relation_emb, triples)
                    for name, triples in splits.items()
                }
        finally:
            model.train(was_training)

    @torch.no_grad()
    def rank(self, score: ScoreFn, entity_emb: Tensor, relation_emb: Tensor, triples: Tensor) -> dict[str, float]:
        """Metrics of ``triples`` given precomputed embeddings and a decoder ``score``."""
        if entity_emb.shape[0] != self.num_entities:
            raise ValueError(
                f"the model encoded {entity_emb.shape[0]} entities, the graph has {self.num_entities}"
            )
        triples = triples.to(self.device).long()
        heads, rels, tails = triples[:, 0], triples[:, 1], triples[:, 2]
        directions = {
            "tail_": (heads, rels, tails),
            "head_": (tails, rels + self.num_relations, heads),
        }
        accumulators = {prefix: RankAccumulator() for prefix in directions}
        both = RankAccumulator()
        for prefix, (subjects, relations, targets) in directions.items():
            for start in range(0, len(targets), self.batch_size):
                part = slice(start, start + self.batch_size)
                scores = score(entity_emb[subjects[part]], relation_emb[relations[part]], entity_emb)
                rows, objects = self.known.lookup(subjects[part], relations[part])
                ranks = filtered_ranks(scores, targets[part], rows, objects)
                accumulators[prefix].add(ranks)
                both.add(ranks)
        metrics = both.metrics()
        for prefix, accumulator in accumulators.items():
            metrics.update(accumulator.metrics(prefix))
        return metrics


def evaluate(
    model: Any,
    graph: Any,
    triples: Tensor,
    all_known_triples: Tensor,
    num_entities: int,
    num_relations: int,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Filtered MRR, Hits@1/3/10 and mean rank of ``triples``, head, tail and both.

    ``all_known_triples`` (train + valid + test) are filtered out of every
    ranking except the answer being ranked.
    """
    evaluator = Evaluator(all_known_triples, num_entities, num_relations, batch_size=batch_size, device=device)
    return evaluator(model, graph, triples)
