"""A model trained to embed unseen entities, on a real server following a real store.

An entity imported after training, before the server starts or while it runs,
answers OK (not NOT_FOUND), marked new, with the scores the same model gives when
the whole current graph is encoded in process (within 1e-5); it is a candidate for
queries about known entities; a graph deleted and imported again is rebuilt from.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from kgserver.client import KGClient
from kgserver.graph import Snapshot
from kgserver.graph.index import rows_in
from kgserver.graph.snapshot import message_graph
from kgserver.graph.vocabulary import Vocabulary
from kgserver.rdf.importer import import_files
from kgserver.serving.live import reencode
from kgserver.serving.source import served_model
from kgserver.store import open_store
from kgserver.tracking.bundle import load_bundle, save_bundle

from .helpers import entity, make_snapshot, relation, train_model
from .test_live import NEW, REFRESH, following_server, import_lines, wait_for_revision
from .test_store import LABEL, write_graph

ADDED = [  # NEW is linked to three known entities; the label comes with it
    f"<{NEW}> <{relation(0)}> <{entity(1)}> .\n",
    f"<{entity(2)}> <{relation(1)}> <{NEW}> .\n",
    f"<{NEW}> <{relation(2)}> <{entity(5)}> .\n",
    f'<{NEW}> <{LABEL}> "New thing"@en .\n',
]


@pytest.fixture()
def inductive_bundle(db_url: str, tmp_path: Path) -> Path:
    """The toy graph imported, and a model trained on it with the unseen-entity vector."""
    with open_store(db_url) as store:
        import_files(store, write_graph(tmp_path, make_snapshot()), "toy")
        snapshot = Snapshot.from_store(store, "toy")
    model = train_model(snapshot, seed=5, epochs=3, unseen_entity_rate=0.3)
    assert model.can_embed_unseen_entities()
    return save_bundle(tmp_path / "bundle", model, snapshot)


def in_process_scores(bundle: Path, db_url: str, head: str, rel: str) -> dict[str, float]:
    """Every entity's score for ``(head, rel, ?)``, encoding the whole stored graph at once:
    the trained entities first, in their order, then the ones the store added."""
    loaded = load_bundle(bundle)
    with open_store(db_url) as store:
        stored = store.read_graph("toy")
    new = [iri for iri in stored.entities if iri not in set(loaded.entities)]
    vocabulary = Vocabulary([*loaded.entities, *new], loaded.relations)
    names = Vocabulary(stored.entities, stored.relations)
    triples, dropped = vocabulary.map_triples(torch.from_numpy(stored.triples), names)
    assert dropped == 0
    splits = torch.from_numpy(stored.splits)
    message = torch.cat([loaded.train_triples.long(), triples[splits < 1]])  # valid/test: known, not evidence
    message = torch.unique(message, dim=0)  # the training triples are stored too
    with torch.inference_mode():
        entity_emb, relation_emb = loaded.model.encode(
            message_graph(message, vocabulary.num_entities, len(loaded.relations))
        )
        h, r = vocabulary.entity_ids([head])[0], vocabulary.relation_ids([rel])[0]
        scores = loaded.model.score(entity_emb[h : h + 1], relation_emb[r : r + 1], entity_emb)[0]
    return dict(zip(vocabulary.entities, scores.tolist()))


@pytest.mark.parametrize("when", ["before-start", "while-serving"])
def test_a_new_entity_answers_as_encoding_the_current_graph_in_process(
    when: str, db_url: str, inductive_bundle: Path, tmp_path: Path
) -> None:
    if when == "before-start":
        assert import_lines(db_url, tmp_path / "new.nt", ADDED) == 2
    with following_server(inductive_bundle, db_url, reencode) as server, KGClient(server.address) as client:
        if when == "while-serving":
            assert client.predict_tails([(entity(0), relation(0))], 1).store_revision == 1
            assert import_lines(db_url, tmp_path / "new.nt", ADDED) == 2
        wait_for_revision(client, 2)
        everything = server.holder.get().num_entities
        answer = client.predict_tails([(NEW, relation(0))], everything, filter_known=False)
        assert answer.store_revision == 2
        served = {row.entity: row.score for row in answer.results[0]}
        expected = in_process_scores(inductive_bundle, db_url, NEW, relation(0))
        assert served.keys() == expected.keys()
        assert max(abs(served[iri] - expected[iri]) for iri in expected) < 1e-5
        # A candidate for questions about known entities, marked new, with its label.
        heads = client.predict_heads([(entity(1), relation(0))], everything, filter_known=False)
        rows = [row for row in heads.results[0] if row.entity == NEW]
        assert len(rows) == 1 and rows[0].new_entity and rows[0].label == "New thing"
        # filter_known leaves out what was imported.
        filtered = client.predict_heads([(entity(1), relation(0))], everything, filter_known=True)
        assert NEW not in {row.entity for row in filtered.results[0]}


def test_a_graph_deleted_and_imported_again_is_followed(db_url: str, inductive_bundle: Path, tmp_path: Path) -> None:
    with following_server(inductive_bundle, db_url, reencode) as server, KGClient(server.address) as client:
        assert client.predict_tails([(entity(0), relation(0))], 1).store_revision == 1
        with open_store(db_url) as store:
            store.delete_graph("toy")
            import_files(store, write_graph(tmp_path, make_snapshot()), "toy")
            (tmp_path / "new.nt").write_text("".join(ADDED), encoding="utf-8")
            import_files(store, [tmp_path / "new.nt"], "toy")
            assert store.revision("toy") == 2  # below nothing the server saw: only the creation time tells
        deadline = time.monotonic() + 10 * REFRESH + 5
        while NEW not in {row.entity for row in client.predict_heads([(entity(1), relation(0))], 70).results[0]}:
            assert time.monotonic() < deadline, "the server did not notice the graph was imported again"
            time.sleep(REFRESH / 4)
        assert server.holder.get().store_revision == 2


def test_a_graph_stored_without_a_split_keeps_its_held_out_triples_out_of_the_message_graph(
    db_url: str, tmp_path: Path
) -> None:
    """Training split it at random; the bundle records the store revision training read, so
    serving knows those triples (filtered) without taking them as evidence."""
    snapshot = make_snapshot()
    rows = torch.cat([snapshot.train, snapshot.valid, snapshot.test]).tolist()
    path = tmp_path / "graph.nt"  # no split in the name: stored without one
    path.write_text("".join(f"<{entity(h)}> <{relation(r)}> <{entity(t)}> .\n" for h, r, t in rows))
    with open_store(db_url) as store:
        import_files(store, [path], "toy")
        trained = Snapshot.from_store(store, "toy")
    assert trained.metadata["split"] == "random" and trained.metadata["store_revision"] == 1
    bundle = save_bundle(tmp_path / "bundle", train_model(trained, seed=5, epochs=1), trained)
    served = served_model("toy@a", load_bundle(bundle), db_url)
    assert torch.equal(served.train_triples, trained.train)  # the message graph the model was evaluated on
    held_out = torch.cat([trained.valid, trained.test])
    assert rows_in(held_out, served.known_triples).all()  # known, so filter_known leaves them out


def test_a_test_split_imported_while_serving_is_known_but_not_evidence(
    db_url: str, inductive_bundle: Path, tmp_path: Path
) -> None:
    line = f"<{entity(0)}> <{relation(0)}> <{NEW}> .\n"  # names a new entity, in a test split only
    with following_server(inductive_bundle, db_url, reencode) as server, KGClient(server.address) as client:
        (tmp_path / "later").mkdir()
        assert import_lines(db_url, tmp_path / "later" / "test.nt", [line]) == 2
        wait_for_revision(client, 2)
        served = server.holder.get()
        assert served.vocabulary.num_entities == served.trained_entities  # a test triple brings no entity in
        assert len(served.train_triples) == len(load_bundle(inductive_bundle).train_triples)
