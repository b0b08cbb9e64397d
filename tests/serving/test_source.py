"""serving/source.py assembles a served version: the stored graph's triples, mapped into the model's ids."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kgserver.errors import ConfigurationError
from kgserver.graph import Snapshot
from kgserver.rdf.importer import import_files
from kgserver.serving.source import served_model
from kgserver.store import open_store
from kgserver.tracking.bundle import load_bundle

from .helpers import entity, relation

NEW_ENTITY = "http://example.org/entity/new"
NEW_RELATION = "http://example.org/relation/new"


def _line(h: str, r: str, t: str) -> str:
    return f"<{h}> <{r}> <{t}> .\n"


def test_known_triples_are_the_training_ones_plus_every_stored_one_the_served_state_can_name(
    db_url: str, tmp_path: Path, bundle_dir: Path, toy_snapshot: Snapshot
) -> None:
    rows = [
        (entity(h), relation(r), entity(t))
        for part in (toy_snapshot.train, toy_snapshot.valid, toy_snapshot.test)
        for h, r, t in part.tolist()
    ]
    present = set(rows)
    later = next(
        (entity(h), relation(2), entity(t)) for h in range(60) for t in range(59, -1, -1)
        if (entity(h), relation(2), entity(t)) not in present
    )
    # imported after training: a triple between known entities, and two the model cannot name
    rows += [later, (entity(0), relation(0), NEW_ENTITY), (entity(1), NEW_RELATION, entity(2))]
    path = tmp_path / "graph.nt"
    path.write_text("".join(_line(*row) for row in rows))
    with open_store(db_url) as store:
        import_files(store, [path], "toy")

    loaded = load_bundle(bundle_dir, version="toy/1")
    served = served_model("toy@a", loaded, db_url)
    # the model can embed unseen entities, so the one imported with a known relation joins the vocabulary
    assert loaded.model.can_embed_unseen_entities()
    assert served.vocabulary.entities[len(loaded.entities) :] == (NEW_ENTITY,)
    entity_id = {iri: i for i, iri in enumerate(served.vocabulary.entities)}
    relation_id = {iri: i for i, iri in enumerate(loaded.relations)}
    truth: dict[tuple[int, int], set[int]] = {}
    for h, r, t in rows:
        if h in entity_id and t in entity_id and r in relation_id:
            truth.setdefault((entity_id[h], relation_id[r]), set()).add(entity_id[t])
            truth.setdefault((entity_id[t], relation_id[r] + len(relation_id)), set()).add(entity_id[h])
    assert (entity_id[later[0]], relation_id[later[1]]) in truth
    subjects, relations = served.known.queries()
    assert {(int(s), int(r)) for s, r in zip(subjects, relations)} == set(truth)
    rows_found, answers = served.known.lookup(subjects, relations)
    for row, (s, r) in enumerate(zip(subjects.tolist(), relations.tolist())):
        assert answers[rows_found == row].tolist() == sorted(truth[(s, r)])

    without_store = served_model("toy@a", loaded, None)
    assert without_store.known.num_answers == 2 * len(torch.unique(loaded.train_triples, dim=0))


def test_a_model_without_a_recorded_graph_cannot_read_known_triples_from_a_store(bundle_dir: Path) -> None:
    loaded = dataclasses.replace(load_bundle(bundle_dir, version="toy/1"), graph_name="")
    with pytest.raises(ConfigurationError, match="does not record the graph it was trained on"):
        served_model("toy@a", loaded, "sqlite:////nonexistent/never-opened.db")
