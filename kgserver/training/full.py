"""Full-graph training: every step encodes the whole message graph, then decodes a batch.

Training queries are reciprocal: triple ``(h, r, t)`` gives ``(h, r, ?) -> t``
and ``(t, r + R, ?) -> h``, so one decoder learns tail and head prediction.
The 1-N source groups them by ``(subject, relation)`` with every true object
as a multi-hot target (LCWA); the negatives source takes single triples and
uniformly sampled corrupt tails. Data order comes from the seeded generator.

Under data-parallel training every rank draws the same order (same seed) and
scores its slice of each batch (``rank`` of ``world_size``), so all ranks
together take one step over the same global batch as a single process would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import dgl
import torch
from torch import Tensor

from kgserver.graph.index import TripleIndex
from kgserver.registry import KGModel
from kgserver.training.losses import Objective, negatives_loss, one_to_n_loss
from kgserver.training.step import Step, shard_of


class FullGraphOneToN:
    """Batches of distinct ``(subject, relation)`` queries scored against all entities."""

    def __init__(
        self,
        model: KGModel,
        graph: dgl.DGLGraph,
        train: Tensor,
        *,
        batch_size: int,
        objective: Objective,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.model, self.graph = model, graph
        self.batch_size, self.objective, self.generator = batch_size, objective, generator
        self.rank, self.world_size = rank, world_size
        self.answers = TripleIndex.build(train.to(graph.device), model.num_relations)
        self.subjects, self.relations = self.answers.queries()

    def steps(self) -> int:
        """Steps in an epoch."""
        return -(-self.answers.num_queries // self.batch_size)

    def batches(self) -> Iterator[Step]:
        """One epoch: this rank's share of each batch, in a seeded random order."""
        order = torch.randperm(self.answers.num_queries, generator=self.generator).to(self.graph.device)
        for batch in order.split(self.batch_size):
            ids = shard_of(batch, self.rank, self.world_size)
            rows, objects = self.answers.answers_of(ids)
            weight = self.objective.normaliser(len(ids), len(rows))
            yield Step(len(ids), weight, self._loss(ids, rows, objects) if len(ids) else None)

    def _loss(self, ids: Tensor, rows: Tensor, objects: Tensor) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            entity_emb, relation_emb = self.model.encode(self.graph)
            logits = self.model.score(entity_emb[self.subjects[ids]], relation_emb[self.relations[ids]], entity_emb)
            return one_to_n_loss(self.objective, logits, rows, objects)

        return loss


class FullGraphNegatives:
    """Batches of reciprocal training triples, each against ``num_negatives`` random tails."""

    def __init__(
        self,
        model: KGModel,
        graph: dgl.DGLGraph,
        train: Tensor,
        *,
        batch_size: int,
        num_negatives: int,
        objective: Objective,
        generator: torch.Generator,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        self.model, self.graph = model, graph
        self.batch_size, self.num_negatives = batch_size, num_negatives
        self.objective, self.generator = objective, generator
        self.rank, self.world_size = rank, world_size
        heads, rels, tails = train.to(graph.device).long().unbind(1)
        self.subjects = torch.cat([heads, tails])
        self.relations = torch.cat([rels, rels + model.num_relations])
        self.objects = torch.cat([tails, heads])

    def steps(self) -> int:
        """Steps in an epoch."""
        return -(-len(self.subjects) // self.batch_size)

    def batches(self) -> Iterator[Step]:
        """One epoch: this rank's share of each batch, in a seeded random order.

        Every rank draws the whole batch's negatives, so the generators stay in step.
        """
        count, num_entities = len(self.subjects), self.model.num_entities
        order = torch.randperm(count, generator=self.generator).to(self.graph.device)
        for batch in order.split(self.batch_size):
            negatives = torch.randint(num_entities, (len(batch), self.num_negatives), generator=self.generator)
            ids = shard_of(batch, self.rank, self.world_size)
            mine = shard_of(negatives.to(self.graph.device), self.rank, self.world_size)
            weight = self.objective.normaliser(len(ids), len(ids))
            yield Step(len(ids), weight, self._loss(ids, mine) if len(ids) else None)

    def _loss(self, ids: Tensor, negatives: Tensor) -> Callable[[], Tensor]:
        def loss() -> Tensor:
            entity_emb, relation_emb = self.model.encode(self.graph)
            return negatives_loss(
                self.objective,
                self.model,
                entity_emb[self.subjects[ids]],
                relation_emb[self.relations[ids]],
                entity_emb,
                self.objects[ids],
                negatives,
            )

        return loss
