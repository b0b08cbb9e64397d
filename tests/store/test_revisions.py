"""Graph revisions: migration 0002 on a populated store, imports bump, reads since a revision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from kgserver.errors import GraphNotFound, ImportSyntaxError
from kgserver.rdf import import_files
from kgserver.store import open_store
from kgserver.store.engine import make_engine
from kgserver.store.migrate import SCHEMA_REVISION, alembic_config, current_revisions, upgrade
from tests.conftest import postgres_database, sqlite_database

EX = "http://example.org/"


def write(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8")
    return path


def named(graph) -> set[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {
        (graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in graph.triples.tolist()
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0001(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store URL whose schema is at revision 0001 only."""
    context = sqlite_database(tmp_path) if request.param == "sqlite" else postgres_database(upgraded=False)
    with context as url:
        engine = make_engine(url)
        try:
            upgrade(engine, "0001")
        finally:
            engine.dispose()
        yield url


def test_upgrading_a_populated_0001_store_keeps_everything_and_sets_revisions(url_at_0001: str) -> None:
    engine = make_engine(url_at_0001)
    try:
        with engine.begin() as connection:
            # What the 0001 importer wrote: two graphs (one empty), terms, a relation, triples.
            connection.execute(text(
                "INSERT INTO graphs (id, name, created_at) VALUES "
                "(1, 'full', CURRENT_TIMESTAMP), (2, 'empty', CURRENT_TIMESTAMP)"
            ))
            for term_id, iri in ((1, f"{EX}a"), (2, f"{EX}b"), (3, f"{EX}c")):
                connection.execute(
                    text("INSERT INTO terms (id, kind, value, value_escaped, key) VALUES (:i, 0, :v, false, :k)"),
                    {"i": term_id, "v": iri, "k": bytes([term_id]) * 16},
                )
            connection.execute(text(
                f"INSERT INTO relations (id, iri, key) VALUES (1, '{EX}p', :k)"), {"k": b"r" * 16}
            )
            connection.execute(text(
                "INSERT INTO triples (graph_id, head, relation, tail, context, split) "
                "VALUES (1, 1, 1, 2, 0, 0), (1, 2, 1, 3, 0, NULL)"
            ))
        assert current_revisions(engine) == {"0001"}
        upgrade(engine)
        assert current_revisions(engine) == {SCHEMA_REVISION}
    finally:
        engine.dispose()
    with open_store(url_at_0001) as store:
        assert store.revision("full") == 1
        assert store.revision("empty") == 0
        graph = store.read_graph("full")
        assert named(graph) == {(f"{EX}a", f"{EX}p", f"{EX}b"), (f"{EX}b", f"{EX}p", f"{EX}c")}
        assert sorted(graph.splits.tolist()) == [-1, 0]
        assert graph.revision == 1
        assert len(store.triples_since("full", 0).triples) == 2
        assert len(store.triples_since("full", 1).triples) == 0

    # Downgrading keeps the data too (no table is copied, so SQLite's cascade cannot fire).
    engine = make_engine(url_at_0001)
    try:
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), "0001")
            connection.commit()
        assert current_revisions(engine) == {"0001"}
        with engine.connect() as connection:
            assert connection.execute(text("SELECT COUNT(*) FROM triples")).scalar_one() == 2
        upgrade(engine)
    finally:
        engine.dispose()
    with open_store(url_at_0001) as store:
        assert store.revision("full") == 1 and len(store.read_graph("full").triples) == 2


def test_imports_that_add_bump_the_revision_and_others_do_not(db_url: str, tmp_path: Path) -> None:
    first = write(tmp_path, "first.nt", f"<{EX}a> <{EX}p> <{EX}b> .\n<{EX}b> <{EX}p> <{EX}c> .\n")
    second = write(tmp_path, "second.nt", f"<{EX}c> <{EX}q> <{EX}new> .\n<{EX}a> <{EX}p> <{EX}b> .\n")
    broken = write(tmp_path, "broken.nt", f"<{EX}x> <{EX}p> <{EX}y> .\nnot a triple\n")
    with open_store(db_url) as store:
        with pytest.raises(GraphNotFound):
            store.revision("g")
        assert import_files(store, [first], "g").revision == 1
        assert store.revision("g") == 1
        assert import_files(store, [first], "g").revision == 1  # adds nothing
        assert store.revision("g") == 1
        summary = import_files(store, [second], "g")  # one new triple, one already there
        assert (summary.added, summary.revision, summary.to_json()["revision"]) == (1, 2, 2)
        assert store.revision("g") == 2
        since = store.triples_since("g", 1)
        assert since.revision == 2
        # The re-stated triple keeps the revision that first added it.
        assert named(since) == {(f"{EX}c", f"{EX}q", f"{EX}new")}
        assert since.entities == [f"{EX}c", f"{EX}new"] and since.relations == [f"{EX}q"]
        assert len(store.triples_since("g", 0).triples) == 3
        assert len(store.triples_since("g", 2).triples) == 0

        with pytest.raises(ImportSyntaxError):
            import_files(store, [broken], "g")  # all or nothing: rolled back
        assert store.revision("g") == 2
        assert len(store.read_graph("g").triples) == 3

        import_files(store, [first], "other")
        store.delete_graph("other")
        assert store.revision("g") == 2  # another graph's life leaves this one alone
        store.delete_graph("g")
        with pytest.raises(GraphNotFound):
            store.revision("g")


def test_prefixes_are_recorded_from_turtle(db_url: str, tmp_path: Path) -> None:
    turtle = write(
        tmp_path, "data.ttl",
        "@prefix wd: <http://www.wikidata.org/entity/> .\n@prefix ex: <http://example.org/> .\n"
        "wd:Q42 ex:p wd:Q1 .\n",
    )
    with open_store(db_url) as store:
        import_files(store, [turtle], "g")
        assert store.prefixes("g") == {"wd": "http://www.wikidata.org/entity/", "ex": EX}
        more = write(tmp_path, "more.ttl", "@prefix ex: <http://example.com/> .\nex:a ex:b ex:c .\n")
        import_files(store, [more], "g")
        assert store.prefixes("g")["ex"] == "http://example.com/"
        store.delete_graph("g")
        import_files(store, [write(tmp_path, "plain.nt", f"<{EX}a> <{EX}p> <{EX}b> .\n")], "g")
        assert store.prefixes("g") == {}
