"""The pyfunc flavor's TopTails on its own: IRIs through the model's Vocabulary, unknown ones as typed errors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from kgserver.errors import UnknownEntity, UnknownRelation
from kgserver.graph import Snapshot
from kgserver.tracking.bundle import LoadedModel
from kgserver.tracking.pyfunc import TopTails

from .helpers import PLUGIN, new_model


def _top_tails(snapshot: Snapshot) -> TopTails:
    model = new_model(snapshot).eval()
    return TopTails(LoadedModel(PLUGIN, model, snapshot.entities, snapshot.relations, snapshot.train))


def test_known_iris_answer_their_top_tails(snapshot: Snapshot) -> None:
    flavor = _top_tails(snapshot)
    head, relation = snapshot.entities[3], snapshot.relations[1]
    answer = flavor.predict(pd.DataFrame({"head": [head], "relation": [relation]}), params={"k": 2})
    expected = torch.topk(flavor.loaded.score_tails(torch.tensor([3]), torch.tensor([1]))[0], 2)
    assert list(answer["tail"]) == [snapshot.entities[i] for i in expected.indices.tolist()]


def test_an_unknown_head_or_relation_is_a_typed_error_naming_it(snapshot: Snapshot) -> None:
    flavor = _top_tails(snapshot)
    head, relation = snapshot.entities[0], snapshot.relations[0]
    with pytest.raises(UnknownEntity) as entity_error:
        flavor.predict(pd.DataFrame({"head": [head, "http://example.org/nobody"], "relation": [relation] * 2}))
    assert entity_error.value.iri == "http://example.org/nobody"
    with pytest.raises(UnknownRelation) as relation_error:
        flavor.predict(pd.DataFrame({"head": [head], "relation": ["http://example.org/never"]}))
    assert relation_error.value.iri == "http://example.org/never"
