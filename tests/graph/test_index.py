"""TripleIndex, the one query -> known answers lookup of evaluation, training targets and serving."""

from __future__ import annotations

import pytest
import torch

from kgserver.graph import TripleIndex


def _random_triples(count: int, num_entities: int, num_relations: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randint(0, num_entities, (count,), generator=generator),
            torch.randint(0, num_relations, (count,), generator=generator),
            torch.randint(0, num_entities, (count,), generator=generator),
        ],
        1,
    )


def _truth(triples: torch.Tensor, num_relations: int) -> dict[tuple[int, int], set[int]]:
    truth: dict[tuple[int, int], set[int]] = {}
    for h, rel, t in triples.tolist():
        truth.setdefault((h, rel), set()).add(t)
        truth.setdefault((t, rel + num_relations), set()).add(h)
    return truth


def test_known_triples_index_matches_a_brute_force_lookup() -> None:
    generator = torch.Generator().manual_seed(0)
    n, r = 50, 4
    triples = _random_triples(300, n, r, seed=0)
    triples = torch.cat([triples, triples[:20]])  # duplicates collapse
    index = TripleIndex.build(triples, r)
    truth = _truth(triples, r)
    entities = torch.randint(0, n, (400,), generator=generator)
    relations = torch.randint(0, 2 * r, (400,), generator=generator)
    rows, answers = index.lookup(entities, relations)
    found: dict[int, list[int]] = {}
    for row, answer in zip(rows.tolist(), answers.tolist()):
        found.setdefault(row, []).append(answer)
    for row, key in enumerate(zip(entities.tolist(), relations.tolist())):
        assert found.get(row, []) == sorted(truth.get(key, set()))
    assert index.num_answers == sum(len(v) for v in truth.values())
    empty = TripleIndex.build(torch.zeros(0, 3, dtype=torch.int64), r)
    assert [len(x) for x in empty.lookup(entities, relations)] == [0, 0]


def test_answer_index_lookup_and_unknown_queries() -> None:
    triples = torch.tensor([[0, 0, 1], [0, 0, 2], [2, 1, 0]])
    index = TripleIndex.build(triples, num_relations=2)
    rows, objects = index.lookup(torch.tensor([0, 1, 0, 2]), torch.tensor([0, 0, 2, 1]))
    pairs = sorted(zip(rows.tolist(), objects.tolist()))
    # (0,0)->{1,2}; (1,0)->{} ; (0, 0+2) i.e. inverse of r0 with subject 0 -> {}; (2,1)->{0}
    assert pairs == [(0, 1), (0, 2), (3, 0)]
    rows, objects = index.lookup(torch.tensor([1, 0]), torch.tensor([2, 3]))
    # inverse queries: (1, r0^-1) -> 0 ; (0, r1^-1) -> 2
    assert sorted(zip(rows.tolist(), objects.tolist())) == [(0, 0), (1, 2)]
    assert index.num_queries == 5


def test_queries_and_answers_of_enumerate_every_distinct_query_once() -> None:
    """What the 1-N training targets read: each distinct query with all its answers, duplicates once."""
    r = 3
    triples = _random_triples(200, 30, r, seed=1)
    triples = torch.cat([triples, triples[:50]])
    index = TripleIndex.build(triples, r)
    truth = _truth(triples, r)
    subjects, relations = index.queries()
    assert index.num_queries == len(truth) == len(subjects)
    keys = subjects * 2 * r + relations
    assert torch.equal(keys, torch.sort(keys).values) and len(torch.unique(keys)) == len(keys)
    order = torch.randperm(index.num_queries, generator=torch.Generator().manual_seed(2))
    rows, answers = index.answers_of(order)
    found: dict[int, list[int]] = {}
    for row, answer in zip(rows.tolist(), answers.tolist()):
        found.setdefault(row, []).append(answer)
    for row, query in enumerate(order.tolist()):
        key = (int(subjects[query]), int(relations[query]))
        assert found[row] == sorted(truth[key])


def test_ids_beyond_a_combined_key_range_do_not_overflow() -> None:
    """Entity ids near 2**40 with 2R = 8: a (key, answer) pair key would need 2**83."""
    big = 2**40
    triples = torch.tensor([[big + 5, 3, big + 1], [big + 5, 3, 7], [big + 5, 3, big + 1], [2, 0, big + 5]])
    index = TripleIndex.build(triples, num_relations=4)
    rows, answers = index.lookup(torch.tensor([big + 5, big + 5, big + 1]), torch.tensor([3, 4, 7]))
    assert list(zip(rows.tolist(), answers.tolist())) == [(0, 7), (0, big + 1), (1, 2), (2, big + 5)]
    assert index.num_answers == 6 and index.num_queries == 5
    # the same random graph with and without a huge id offset: identical answers, up to the offset
    r = 3
    triples = _random_triples(300, 40, r, seed=4)
    shifted = triples.clone()
    shifted[:, [0, 2]] += big
    small_index, big_index = TripleIndex.build(triples, r), TripleIndex.build(shifted, r)
    subjects, relations = small_index.queries()
    rows, answers = small_index.lookup(subjects, relations)
    big_rows, big_answers = big_index.lookup(subjects + big, relations)
    assert torch.equal(rows, big_rows) and torch.equal(answers + big, big_answers)


def test_triples_must_be_an_n_by_3_tensor_of_ids() -> None:
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        TripleIndex.build(torch.zeros(4, dtype=torch.int64), num_relations=1)
    with pytest.raises(ValueError, match="negative id"):
        TripleIndex.build(torch.tensor([[0, 0, 1], [2, 0, -1]]), num_relations=1)
