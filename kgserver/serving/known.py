"""Known triples as a CSR lookup, to leave them out of predictions (``filter_known``).

Built once per served model version: every known ``(h, r, t)`` also yields its
inverse ``(t, r + R, h)``, so one structure answers both tail queries ``(h, r, ?)``
and head queries asked as ``(t, r + R, ?)``. Masking a batch of queries is a few
vectorised tensor operations, never a Python loop over entities or triples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class KnownTriples:
    """For each distinct ``(entity, relation)`` key, the sorted answers that are known.

    ``keys`` (sorted, unique) are ``entity * 2R + relation``; the answers of
    ``keys[i]`` are ``answers[offsets[i]:offsets[i + 1]]``.
    """

    keys: Tensor
    offsets: Tensor
    answers: Tensor
    num_relations: int

    @classmethod
    def build(cls, triples: Tensor, num_entities: int, num_relations: int) -> "KnownTriples":
        """Index ``triples`` (int64 ``[n, 3]`` of ids) and their inverses; duplicates collapse."""
        triples = triples.to(torch.int64).reshape(-1, 3)
        h, r, t = triples[:, 0], triples[:, 1], triples[:, 2]
        sources = torch.cat([h, t])
        relations = torch.cat([r, r + num_relations])
        answers = torch.cat([t, h])
        keys = sources * (2 * num_relations) + relations
        pairs = torch.unique(keys * num_entities + answers)  # sorted by key, then answer
        pair_keys = torch.div(pairs, num_entities, rounding_mode="floor")
        unique_keys, counts = torch.unique_consecutive(pair_keys, return_counts=True)
        offsets = torch.zeros(len(unique_keys) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(unique_keys, offsets, pairs - pair_keys * num_entities, num_relations)

    def __len__(self) -> int:
        """Number of distinct (key, answer) pairs, inverses included."""
        return len(self.answers)

    def lookup(self, entities: Tensor, relations: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, answers)``: query ``rows[i]`` has the known answer ``answers[i]``.

        ``relations`` are in ``[0, 2R)`` (inverse ids for head queries).
        """
        if len(self.keys) == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        query_keys = entities * (2 * self.num_relations) + relations
        position = torch.searchsorted(self.keys, query_keys).clamp_(max=len(self.keys) - 1)
        found = self.keys[position] == query_keys
        starts = self.offsets[position]
        counts = (self.offsets[position + 1] - starts) * found
        rows = torch.repeat_interleave(torch.arange(len(query_keys)), counts)
        # position of each answer within its query's run: global index minus the run's start
        run_starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        within = torch.arange(len(rows)) - run_starts
        return rows, self.answers[torch.repeat_interleave(starts, counts) + within]


def stored_triples(
    db_url: str | None, graph: str, entity_index: dict[str, int], relation_index: dict[str, int]
) -> Tensor:
    """Every triple of ``graph`` in the store (all splits), as ids of a model's vocabulary.

    Read once when a model version is loaded. Triples naming an entity or relation
    the model does not know cannot be predicted by it, so they are left out.
    """
    import numpy as np

    from kgserver.store import open_store

    store = open_store(db_url)
    try:
        stored = store.read_graph(graph)
    finally:
        store.close()
    entity_map = np.array([entity_index.get(iri, -1) for iri in stored.entities] + [-1], dtype=np.int64)
    relation_map = np.array([relation_index.get(iri, -1) for iri in stored.relations] + [-1], dtype=np.int64)
    triples = np.asarray(stored.triples, dtype=np.int64).reshape(-1, 3)
    mapped = np.stack(
        [entity_map[triples[:, 0]], relation_map[triples[:, 1]], entity_map[triples[:, 2]]], axis=1
    )
    return torch.from_numpy(mapped[(mapped >= 0).all(axis=1)].copy())
