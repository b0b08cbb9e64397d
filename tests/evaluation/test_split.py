"""evaluate_split: a model re-evaluated on a graph whose ids and IRIs differ from its own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kgserver.errors import ConfigurationError
from kgserver.evaluation import evaluate, evaluate_split
from kgserver.graph import Snapshot

E = "http://example.org/e/"
R = "http://example.org/r/"


class TableScores(nn.Module):
    """A fixed score per (head + relation, tail) pattern; many ties, as in a real ranking."""

    def __init__(self, num_entities: int, num_relations: int) -> None:
        super().__init__()
        self.num_entities, self.num_relations = num_entities, num_relations

    def encode(self, graph: object) -> tuple[torch.Tensor, torch.Tensor]:
        entities = torch.arange(self.num_entities, dtype=torch.float32).unsqueeze(1)
        relations = torch.arange(2 * self.num_relations, dtype=torch.float32).unsqueeze(1)
        return entities, relations

    def score(self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        return torch.remainder(heads * 5 + relations * 3 + tails.t() * 7, 6)


def _graph_and_model() -> tuple[Snapshot, SimpleNamespace]:
    """A graph of 12 entities and 3 relations; a model that knows 10 of them (and one the graph lacks)."""
    graph_entities = [E + str(i) for i in range(12)]
    graph_relations = [R + name for name in ("a", "b", "c")]
    generator = torch.Generator().manual_seed(3)
    triples = torch.unique(
        torch.stack(
            [
                torch.randint(0, 12, (90,), generator=generator),
                torch.randint(0, 3, (90,), generator=generator),
                torch.randint(0, 12, (90,), generator=generator),
            ],
            1,
        ),
        dim=0,
    )
    triples = triples[torch.randperm(len(triples), generator=generator)]
    snapshot = Snapshot("g", graph_entities, graph_relations, triples[20:], triples[:10], triples[10:20])
    # the model: entities 10 and 11 unknown to it, relation c unknown, ids in another order, one extra entity
    model_entities = [E + str(i) for i in reversed(range(10))] + [E + "extra"]
    model_relations = [R + "b", R + "a"]
    to_model = {i: model_entities.index(E + str(i)) for i in range(10)}
    rel_to_model = {0: 1, 1: 0}

    def in_model(part: torch.Tensor) -> torch.Tensor:
        rows = [
            [to_model[h], rel_to_model[r], to_model[t]]
            for h, r, t in part.tolist()
            if h in to_model and t in to_model and r in rel_to_model
        ]
        return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)

    train = torch.cat([in_model(snapshot.train), in_model(snapshot.test)[:2]])  # 2 test triples it trained on
    trained = SimpleNamespace(
        model=TableScores(len(model_entities), len(model_relations)),
        entities=model_entities,
        relations=model_relations,
        train_triples=train,
        graph=lambda: torch.zeros(1),
        in_model=in_model,
    )
    return snapshot, trained


def test_split_is_mapped_by_iri_and_ranked_against_everything_the_model_can_name() -> None:
    snapshot, trained = _graph_and_model()
    result = evaluate_split(trained, snapshot, "test", model_name="toy@champion", batch_size=4)
    wanted = trained.in_model(snapshot.test)
    assert result.triples == len(wanted) > 0
    assert result.unknown == len(snapshot.test) - len(wanted) > 0
    assert result.in_training == 2
    known = torch.cat(
        [trained.train_triples, *(trained.in_model(p) for p in (snapshot.train, snapshot.valid, snapshot.test))]
    )
    expected = evaluate(trained.model, None, wanted, known, len(trained.entities), len(trained.relations))
    assert result.metrics == pytest.approx(expected)
    assert set(result.metrics) >= {"mrr", "head_mrr", "tail_mrr", "hits_at_10", "mean_rank"}


def test_a_split_the_model_cannot_name_at_all_is_a_configuration_error() -> None:
    snapshot, trained = _graph_and_model()
    trained.relations = [R + "other"]
    trained.model = TableScores(len(trained.entities), 1)
    with pytest.raises(ConfigurationError, match=r"none of the \d+ valid triples of graph 'g' .* model 'toy@champion'"):
        evaluate_split(trained, snapshot, "valid", model_name="toy@champion")
