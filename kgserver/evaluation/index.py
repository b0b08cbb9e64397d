"""A CSR lookup from a query ``(subject, relation)`` to every object known for it.

Both the filtered evaluation (which answers to ignore when ranking) and the 1-N
training targets (which entities are true for a query) need "all ``o`` with
``(s, r, o)`` known", for a whole batch of queries at once. Built once with a
sort, it answers a batch with a binary search and a gather, no Python loop.

Queries are reciprocal: triple ``(h, r, t)`` gives ``(h, r) -> t`` and
``(t, r + R) -> h``, so head prediction is tail prediction with the inverse.
"""

from __future__ import annotations

import torch
from torch import Tensor


class AnswerIndex:
    """Sorted unique query keys ``s * 2R + r`` with the CSR ranges of their objects.

    Duplicate triples are harmless: an object listed twice is marked twice.
    """

    def __init__(self, triples: Tensor, num_relations: int) -> None:
        if triples.dim() != 2 or triples.shape[1] != 3:
            raise ValueError(f"triples must be an [n, 3] tensor, got shape {tuple(triples.shape)}")
        triples = triples.long()
        self.num_relations = num_relations
        heads, rels, tails = triples[:, 0], triples[:, 1], triples[:, 2]
        subjects = torch.cat([heads, tails])
        relations = torch.cat([rels, rels + num_relations])
        objects = torch.cat([tails, heads])
        keys = self._key(subjects, relations)
        keys, order = torch.sort(keys, stable=True)
        self.objects = objects[order]
        self.keys, counts = torch.unique_consecutive(keys, return_counts=True)
        self.offsets = torch.zeros(len(self.keys) + 1, dtype=torch.long, device=keys.device)
        torch.cumsum(counts, 0, out=self.offsets[1:])

    def _key(self, subjects: Tensor, relations: Tensor) -> Tensor:
        return subjects * (2 * self.num_relations) + relations

    def __len__(self) -> int:
        """The number of distinct queries."""
        return len(self.keys)

    def to(self, device: torch.device | str) -> "AnswerIndex":
        """Move the index's tensors to ``device`` (in place; returns ``self``)."""
        self.keys = self.keys.to(device)
        self.offsets = self.offsets.to(device)
        self.objects = self.objects.to(device)
        return self

    def queries(self) -> tuple[Tensor, Tensor]:
        """Every distinct query as ``(subjects, relations)``, in key order."""
        span = 2 * self.num_relations
        return self.keys // span, self.keys % span

    def answers_of(self, query_ids: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, objects)``: object ``objects[k]`` answers query ``query_ids[rows[k]]``."""
        starts = self.offsets[query_ids]
        counts = self.offsets[query_ids + 1] - starts
        return self._gather(starts, counts)

    def lookup(self, subjects: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, objects)`` for arbitrary queries; a query nobody answers has no rows."""
        keys = self._key(subjects, relations)
        position = torch.searchsorted(self.keys, keys).clamp_(max=max(len(self.keys) - 1, 0))
        if len(self.keys) == 0:
            found = torch.zeros_like(keys, dtype=torch.bool)
        else:
            found = self.keys[position] == keys
        starts = self.offsets[position]
        counts = torch.where(found, self.offsets[position + 1] - starts, torch.zeros_like(starts))
        return self._gather(starts, counts)

    def _gather(self, starts: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        rows = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
        first_of_row = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        within = torch.arange(len(rows), device=counts.device) - first_of_row
        return rows, self.objects[starts[rows] + within]
