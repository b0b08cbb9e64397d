"""Full-graph training: every step encodes the whole message graph, then decodes a batch.

Training queries are reciprocal: triple ``(h, r, t)`` gives ``(h, r, ?) -> t``
and ``(t, r + R, ?) -> h``, so one decoder learns tail and head prediction.
The 1-N source groups them by ``(subject, relation)`` with every true object
as a multi-hot target (LCWA); the negatives source takes single triples and
uniformly sampled corrupt tails. Data order comes from the seeded generator.
"""

from __future__ import annotations

from typing import Iterator

import dgl
import torch
from torch import Tensor

from kgserver.evaluation import AnswerIndex
from kgserver.registry import KGModel
from kgserver.training.losses import Objective, negatives_loss, one_to_n_loss


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
    ) -> None:
        self.model, self.graph = model, graph
        self.batch_size, self.objective, self.generator = batch_size, objective, generator
        self.answers = AnswerIndex(train.to(graph.device), model.num_relations)
        self.subjects, self.relations = self.answers.queries()

    def batches(self) -> Iterator[tuple[Tensor, int]]:
        """One epoch: ``(loss, number of queries)`` per batch, in a seeded random order."""
        order = torch.randperm(len(self.answers), generator=self.generator).to(self.graph.device)
        for ids in order.split(self.batch_size):
            entity_emb, relation_emb = self.model.encode(self.graph)
            logits = self.model.score(entity_emb[self.subjects[ids]], relation_emb[self.relations[ids]], entity_emb)
            rows, objects = self.answers.answers_of(ids)
            yield one_to_n_loss(self.objective, logits, rows, objects), len(ids)


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
    ) -> None:
        if num_negatives < 1:
            raise ValueError(f"num_negatives must be positive, got {num_negatives}")
        self.model, self.graph = model, graph
        self.batch_size, self.num_negatives = batch_size, num_negatives
        self.objective, self.generator = objective, generator
        heads, rels, tails = train.to(graph.device).long().unbind(1)
        self.subjects = torch.cat([heads, tails])
        self.relations = torch.cat([rels, rels + model.num_relations])
        self.objects = torch.cat([tails, heads])

    def batches(self) -> Iterator[tuple[Tensor, int]]:
        """One epoch: ``(loss, number of triples)`` per batch, in a seeded random order."""
        count, num_entities = len(self.subjects), self.model.num_entities
        order = torch.randperm(count, generator=self.generator).to(self.graph.device)
        for ids in order.split(self.batch_size):
            negatives = torch.randint(num_entities, (len(ids), self.num_negatives), generator=self.generator)
            entity_emb, relation_emb = self.model.encode(self.graph)
            loss = negatives_loss(
                self.objective,
                self.model,
                entity_emb[self.subjects[ids]],
                relation_emb[self.relations[ids]],
                entity_emb,
                self.objects[ids],
                negatives.to(self.graph.device),
            )
            yield loss, len(ids)
