"""The vectorised filtered evaluator against a brute-force per-query reference, ties included."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kgserver.evaluation import Evaluator, evaluate, filtered_ranks

NUM_ENTITIES, NUM_RELATIONS = 13, 3


class IntegerScores(nn.Module):
    """Scores are small integers, so many candidates tie with the answer."""

    def encode(self, graph: object) -> tuple[torch.Tensor, torch.Tensor]:
        entities = torch.arange(NUM_ENTITIES, dtype=torch.float32).unsqueeze(1)
        relations = torch.arange(2 * NUM_RELATIONS, dtype=torch.float32).unsqueeze(1)
        return entities, relations

    def score(self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        return torch.remainder(heads * 7 + relations * 3 + tails.t() * 5, 4)


def _brute_force_rank(scores: list[float], target: int, excluded: set[int]) -> float:
    """Sort the surviving candidates with the answer first, then last, among ties."""
    candidates = [e for e in range(len(scores)) if e == target or e not in excluded]
    first = sorted(candidates, key=lambda e: (-scores[e], e != target))
    last = sorted(candidates, key=lambda e: (-scores[e], e == target))
    return (first.index(target) + 1 + last.index(target) + 1) / 2


def _reference(
    model: IntegerScores, triples: torch.Tensor, known: torch.Tensor
) -> tuple[dict[str, float], list[float]]:
    entity_emb, relation_emb = model.encode(None)
    known_set = {tuple(t) for t in known.tolist()}
    ranks: dict[str, list[float]] = {"head_": [], "tail_": []}
    for h, r, t in triples.tolist():
        tail_scores = model.score(entity_emb[[h]], relation_emb[[r]], entity_emb)[0].tolist()
        excluded = {e for e in range(NUM_ENTITIES) if (h, r, e) in known_set}
        ranks["tail_"].append(_brute_force_rank(tail_scores, t, excluded))
        head_scores = model.score(entity_emb[[t]], relation_emb[[r + NUM_RELATIONS]], entity_emb)[0].tolist()
        excluded = {e for e in range(NUM_ENTITIES) if (e, r, t) in known_set}
        ranks["head_"].append(_brute_force_rank(head_scores, h, excluded))
    ranks[""] = ranks["tail_"] + ranks["head_"]
    metrics = {}
    for prefix, values in ranks.items():
        metrics[f"{prefix}mrr"] = sum(1 / v for v in values) / len(values)
        metrics[f"{prefix}mean_rank"] = sum(values) / len(values)
        for k in (1, 3, 10):
            metrics[f"{prefix}hits_at_{k}"] = sum(v <= k for v in values) / len(values)
    return metrics, ranks[""]


def _random_triples(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    triples = torch.stack(
        [
            torch.randint(NUM_ENTITIES, (count,), generator=generator),
            torch.randint(NUM_RELATIONS, (count,), generator=generator),
            torch.randint(NUM_ENTITIES, (count,), generator=generator),
        ],
        dim=1,
    )
    return torch.unique(triples, dim=0)


@pytest.mark.parametrize("batch_size", [1, 5, 1000])
def test_matches_brute_force_with_ties(batch_size: int) -> None:
    known = _random_triples(120, seed=1)
    evaluated = known[torch.randperm(len(known), generator=torch.Generator().manual_seed(2))[:30]]
    model = IntegerScores()
    got = evaluate(model, None, evaluated, known, NUM_ENTITIES, NUM_RELATIONS, batch_size=batch_size)
    want, ranks = _reference(model, evaluated, known)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    # the integer scores really do tie: some answers sit among an odd number of ties
    assert any(rank != math.floor(rank) for rank in ranks)


class CountingEncodes(IntegerScores):
    def __init__(self) -> None:
        super().__init__()
        self.encodes = 0

    def encode(self, graph: object) -> tuple[torch.Tensor, torch.Tensor]:
        self.encodes += 1
        return super().encode(graph)


def test_several_splits_rank_from_one_encode() -> None:
    known = _random_triples(120, seed=3)
    first, second = known[:20], known[20:50]
    evaluator = Evaluator(known, NUM_ENTITIES, NUM_RELATIONS, batch_size=7)
    model = CountingEncodes()
    got = evaluator.splits(model, None, {"test": first, "valid": second})
    assert model.encodes == 1
    assert list(got) == ["test", "valid"]
    assert got["test"] == pytest.approx(_reference(model, first, known)[0], abs=1e-12)
    assert got["valid"] == pytest.approx(_reference(model, second, known)[0], abs=1e-12)
    assert model.training  # the evaluator restores the mode it found


def test_ties_take_the_mean_of_optimistic_and_pessimistic() -> None:
    scores = torch.tensor([[3.0, 3.0, 3.0, 1.0, 5.0]])
    no_filter = torch.empty(0, dtype=torch.long)
    # one better (5), two ties: optimistic 2, pessimistic 4
    assert filtered_ranks(scores, torch.tensor([0]), no_filter, no_filter).tolist() == [3.0]
    # filtering the better answer and one tie: optimistic 1, pessimistic 2
    rows, objects = torch.tensor([0, 0]), torch.tensor([4, 2])
    assert filtered_ranks(scores, torch.tensor([0]), rows, objects).tolist() == [1.5]
    # the answer is never filtered out of its own ranking
    rows, objects = torch.tensor([0]), torch.tensor([3])
    assert filtered_ranks(scores, torch.tensor([3]), rows, objects).tolist() == [5.0]


def test_constant_model_ranks_at_the_middle() -> None:
    scores = torch.zeros(2, 9)
    none = torch.empty(0, dtype=torch.long)
    assert filtered_ranks(scores, torch.tensor([0, 8]), none, none).tolist() == [5.0, 5.0]


def test_nan_scores_are_an_error() -> None:
    scores = torch.tensor([[float("nan"), 1.0]])
    none = torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="NaN"):
        filtered_ranks(scores, torch.tensor([0]), none, none)
