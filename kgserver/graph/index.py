"""A CSR lookup from a query ``(subject, relation)`` to every object known for it.

Three users need "all ``o`` with ``(s, r, o)`` known" for a whole batch of
queries at once: the filtered evaluation (which answers to ignore when
ranking), the 1-N training targets (which entities are true for a query) and
serving's ``filter_known`` (which predictions to leave out). Built once with a
sort, :class:`TripleIndex` answers a batch with a binary search and a gather,
never a Python loop over queries, entities or triples.

Queries are reciprocal: triple ``(h, r, t)`` gives ``(h, r) -> t`` and
``(t, r + R) -> h``, so head prediction is tail prediction with the inverse.

This module needs torch only (no DGL, no store), so evaluation and serving can
import it without the rest of :mod:`kgserver.graph`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TripleIndex:
    """Sorted unique query keys ``s * 2R + r`` with the CSR ranges of their answers.

    The answers of ``keys[i]`` are ``answers[offsets[i]:offsets[i + 1]]``, sorted
    and distinct: a triple listed twice is indexed once, so counting a query's
    answers counts distinct entities. Every tensor lives on the device of the
    triples the index was built from; queries must be on that device too.
    """

    keys: Tensor
    offsets: Tensor
    answers: Tensor
    num_relations: int

    @classmethod
    def build(cls, triples: Tensor, num_relations: int) -> TripleIndex:
        """Index ``triples`` (``[n, 3]`` ids, relations in ``[0, R)``) and their inverses."""
        if triples.dim() != 2 or triples.shape[1] != 3:
            raise ValueError(f"triples must be an [n, 3] tensor, got shape {tuple(triples.shape)}")
        triples = triples.long()
        if len(triples) and int(triples.min()) < 0:
            raise ValueError("triples hold a negative id; ids are positions in a vocabulary")
        heads, rels, tails = triples[:, 0], triples[:, 1], triples[:, 2]
        keys = _key(torch.cat([heads, tails]), torch.cat([rels, rels + num_relations]), num_relations)
        answers = torch.cat([tails, heads])
        keys, answers = _distinct_pairs(keys, answers)
        unique_keys, counts = torch.unique_consecutive(keys, return_counts=True)
        offsets = torch.zeros(len(unique_keys) + 1, dtype=torch.long, device=keys.device)
        torch.cumsum(counts, 0, out=offsets[1:])
        return cls(unique_keys, offsets, answers, num_relations)

    @property
    def num_queries(self) -> int:
        """The number of distinct queries ``(subject, relation)`` with an answer (inverses included)."""
        return len(self.keys)

    @property
    def num_answers(self) -> int:
        """The number of distinct ``(query, answer)`` pairs, inverses included."""
        return len(self.answers)

    def queries(self) -> tuple[Tensor, Tensor]:
        """Every distinct query as ``(subjects, relations)``, in key order (query id order)."""
        span = 2 * self.num_relations
        return self.keys // span, self.keys % span

    def answers_of(self, query_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, answers)``: ``answers[k]`` answers query ``query_ids[rows[k]]`` (ids as in :meth:`queries`)."""
        starts = self.offsets[query_ids]
        return self._gather(starts, self.offsets[query_ids + 1] - starts)

    def lookup(self, subjects: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, answers)``: query ``rows[k]`` has the known answer ``answers[k]``.

        ``relations`` are in ``[0, 2R)`` (inverse ids for head queries); a query
        nothing answers has no rows. Rows come in query order, each query's
        answers sorted.
        """
        keys = _key(subjects, relations, self.num_relations)
        if self.num_queries == 0:
            empty = torch.zeros(0, dtype=torch.long, device=keys.device)
            return empty, empty
        position = torch.searchsorted(self.keys, keys).clamp_(max=self.num_queries - 1)
        found = self.keys[position] == keys
        starts = self.offsets[position]
        counts = torch.where(found, self.offsets[position + 1] - starts, torch.zeros_like(starts))
        return self._gather(starts, counts)

    def _gather(self, starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        # position of each answer within its query's run: global index minus the run's first index
        first_of_row = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        within = torch.arange(len(rows), device=counts.device) - first_of_row
        return rows, self.answers[starts[rows] + within]


def _key(subjects: Tensor, relations: Tensor, num_relations: int) -> Tensor:
    return subjects.long() * (2 * num_relations) + relations.long()


def _distinct_pairs(keys: Tensor, answers: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct ``(key, answer)`` pairs (all ids non-negative), sorted by key, then answer."""
    if len(keys) == 0:
        return keys, answers
    span = int(answers.max()) + 1
    if (int(keys.max()) + 1) * span <= torch.iinfo(torch.int64).max:
        pairs = torch.unique(keys * span + answers)  # one sort when a combined key fits in int64
        return torch.div(pairs, span, rounding_mode="floor"), pairs % span
    # otherwise two stable sorts, answer then key, give the same order without a combined key
    by_answer = torch.argsort(answers, stable=True)
    order = by_answer[torch.argsort(keys[by_answer], stable=True)]
    keys, answers = keys[order], answers[order]
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = (keys[1:] != keys[:-1]) | (answers[1:] != answers[:-1])
    return keys[first], answers[first]



def rows_in(triples: Tensor, reference: Tensor) -> Tensor:
    """Which rows of ``triples`` also occur in ``reference`` (both ``[n, 3]`` id tensors), as a bool mask."""
    if len(reference) == 0 or len(triples) == 0:
        return torch.zeros(len(triples), dtype=torch.bool, device=triples.device)
    span = int(torch.cat([triples, reference]).max()) + 1

    def keys(rows: Tensor) -> Tensor:
        rows = rows.long()
        return (rows[:, 0] * span + rows[:, 1]) * span + rows[:, 2]

    return torch.isin(keys(triples), keys(reference))
