"""Filtered ranks with the realistic treatment of ties, and the metrics over them.

The rank of the true answer among all entities is computed after removing every
other answer known to be true (the "filtered" setting). Ties are resolved as
the mean of the optimistic rank (the answer placed before every tie) and the
pessimistic rank (placed after every tie): a model that scores everything equal
gets the rank a random order would give on average, not rank 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

HITS_AT = (1, 3, 10)


def filtered_ranks(scores: Tensor, targets: Tensor, known_rows: Tensor, known_objects: Tensor) -> Tensor:
    """Realistic filtered ranks ``[B]`` (float) of ``targets`` in ``scores [B, N]``.

    ``(known_rows, known_objects)`` lists the known true answers of each row;
    they are ignored when counting the candidates that beat the target (the
    target itself is always ignored, whether listed or not).
    """
    batch = torch.arange(len(targets), device=scores.device)
    target_scores = scores[batch, targets].unsqueeze(1)
    if torch.isnan(target_scores).any():
        raise ValueError("the model produced NaN scores; its ranks are undefined")
    known = torch.zeros_like(scores, dtype=torch.bool)
    known[known_rows, known_objects] = True
    known[batch, targets] = True
    competing = ~known
    optimistic = ((scores > target_scores) & competing).sum(1)
    pessimistic = ((scores >= target_scores) & competing).sum(1)
    return (optimistic + pessimistic).double() / 2 + 1


class RankAccumulator:
    """Sums of reciprocal ranks, ranks and hits, so batches need not be kept."""

    def __init__(self) -> None:
        self.count = 0
        self.reciprocal = 0.0
        self.rank = 0.0
        self.hits = {k: 0 for k in HITS_AT}

    def add(self, ranks: Tensor) -> None:
        self.count += len(ranks)
        self.reciprocal += ranks.reciprocal().sum().item()
        self.rank += ranks.sum().item()
        for k in HITS_AT:
            self.hits[k] += int((ranks <= k).sum().item())

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """``mrr``, ``hits_at_k`` and ``mean_rank`` under ``prefix``; empty -> error."""
        if self.count == 0:
            raise ValueError("no queries were ranked; there is nothing to average")
        result = {f"{prefix}mrr": self.reciprocal / self.count, f"{prefix}mean_rank": self.rank / self.count}
        for k in HITS_AT:
            result[f"{prefix}hits_at_{k}"] = self.hits[k] / self.count
        return result
