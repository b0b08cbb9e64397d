"""The store on both backends: schema, read_graph, labels, graphs, delete_graph, URL resolution."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from kgserver import config
from kgserver.errors import ConfigurationError, GraphNotFound, SchemaOutOfDate
from kgserver.rdf import import_files
from kgserver.store import Store, open_store, upgrade_database
from kgserver.store.migrate import SCHEMA_REVISION, head_revisions
from kgserver.store.models import Base

EX = "http://example.org/"

PEOPLE = f"""
@prefix ex: <{EX}> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
@prefix xsd: <http://www.w3.org/2001/XMLSchema#> .
ex:alice ex:knows ex:bob , _:someone ;
         ex:age "030"^^xsd:integer ;
         rdfs:label "Alice"@en , "Alicia"@es , "Alice (GB)"@en-GB .
ex:bob ex:knows ex:carol ;
       rdfs:label "Bob" , "Bob"@fr .
ex:carol rdfs:label "Carol"@de , "Caroline"@en-US .
_:someone ex:knows ex:alice .
"""

PETS = f"""
<{EX}bob> <{EX}owns> <{EX}rex> .
<{EX}rex> <{EX}likes> <{EX}bone> .
"""


def write(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(content, encoding="utf-8")
    return path


def test_migrations_create_exactly_the_models(db_url: str) -> None:
    store = open_store(db_url)
    try:
        with store.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        store.close()


def test_schema_revision_is_the_newest_migration() -> None:
    """Opening a store compares against SCHEMA_REVISION without loading Alembic."""
    assert head_revisions() == {SCHEMA_REVISION}


def test_read_graph_arrays_splits_and_literals(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url) as store:
        import_files(store, [write(tmp_path, "people.ttl", PEOPLE)], "people", split="train")
        graph = store.read_graph("people")
        # Literal-valued triples are left out; the blank node is an entity.
        assert graph.relations == [f"{EX}knows"]
        blank = [entity for entity in graph.entities if entity.startswith("_:")]
        assert len(blank) == 1
        assert graph.entities == sorted([f"{EX}alice", f"{EX}bob", f"{EX}carol", blank[0]])
        assert graph.triples.dtype == np.int64 and graph.triples.shape == (4, 3)
        assert graph.splits.dtype == np.int8 and graph.splits.tolist() == [0, 0, 0, 0]
        named = {
            (graph.entities[h], graph.relations[r], graph.entities[t]) for h, r, t in graph.triples.tolist()
        }
        assert (f"{EX}alice", f"{EX}knows", f"{EX}bob") in named
        assert (blank[0], f"{EX}knows", f"{EX}alice") in named
        # Sorted by (head, relation, tail) so every backend returns the same arrays.
        assert graph.triples.tolist() == sorted(graph.triples.tolist())

        with_literals = store.read_graph("people", include_literals=True)
        assert '"030"^^<http://www.w3.org/2001/XMLSchema#integer>' in with_literals.entities
        assert '"Alice"@en' in with_literals.entities and '"Bob"' in with_literals.entities
        assert len(with_literals.triples) == 4 + 8  # plus age and 7 labels


def test_labels_prefer_english(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url) as store:
        import_files(store, [write(tmp_path, "people.ttl", PEOPLE)], "people")
        assert store.labels("people", [f"{EX}alice", f"{EX}bob", f"{EX}carol", f"{EX}nobody"]) == {
            f"{EX}alice": "Alice",
            f"{EX}bob": "Bob",
            f"{EX}carol": "Caroline",
        }
        assert set(store.labels("people")) == {f"{EX}alice", f"{EX}bob", f"{EX}carol"}
        with pytest.raises(GraphNotFound):
            store.labels("missing", [f"{EX}alice"])


def test_graphs_counts_and_delete_removes_only_what_it_alone_uses(
    db_url: str, tmp_path: Path, table_counts: Callable[[Store], dict[str, int]]
) -> None:
    with open_store(db_url) as store:
        import_files(store, [write(tmp_path, "people.ttl", PEOPLE)], "people", split="train")
        import_files(store, [write(tmp_path, "test-pets.nt", PETS)], "pets")
        infos = {info.name: info for info in store.graphs()}
        assert infos["people"].entities == 4 and infos["people"].relations == 1
        assert infos["people"].triples == {"train": 4, "valid": 0, "test": 0, "none": 0}
        assert infos["people"].literal_triples == 8 and infos["people"].sources == 1
        # The file name starts with "test": the split comes from it.
        assert infos["pets"].triples == {"train": 0, "valid": 0, "test": 2, "none": 0}
        # bob is in both graphs and counts in each; each graph counts only its own relations
        assert (infos["pets"].entities, infos["pets"].relations, infos["pets"].literal_triples) == (3, 2, 0)
        assert infos["pets"].sources == 1
        pets_before = store.read_graph("pets")
        before = table_counts(store)

        deleted = store.delete_graph("people")
        # bob is shared with "pets" and stays; alice, carol, the blank node and the
        # 8 literals go, and so do the three predicates only "people" used.
        assert (deleted.triples, deleted.sources) == (12, 1)
        assert deleted.terms == 3 + 8
        assert deleted.relations == 3  # knows, age, label
        after = table_counts(store)
        assert after["terms"] == before["terms"] - deleted.terms
        assert after["triples"] == 2 and after["graphs"] == 1 and after["imports"] == 1
        pets_after = store.read_graph("pets")
        assert pets_after.entities == pets_before.entities
        assert np.array_equal(pets_after.triples, pets_before.triples)
        assert [info.name for info in store.graphs()] == ["pets"]
        with pytest.raises(GraphNotFound):
            store.delete_graph("people")
        with pytest.raises(GraphNotFound):
            store.read_graph("people")


def test_named_graph_statements_read_once(db_url: str, tmp_path: Path, stored_quads: Callable) -> None:
    trig = f"<{EX}g1> {{ <{EX}a> <{EX}p> <{EX}b> . }}\n<{EX}g2> {{ <{EX}a> <{EX}p> <{EX}b> . }}\n"
    with open_store(db_url) as store:
        summary = import_files(store, [write(tmp_path, "data.trig", trig)], "quads")
        assert summary.added == 2  # two statements (one per named graph) are stored
        graph = store.read_graph("quads")
        assert graph.triples.tolist() == [[0, 0, 1]]
        assert {context.value for *_, context in stored_quads(store, "quads")} == {f"{EX}g1", f"{EX}g2"}


def test_postgresql_behind_is_refused_until_upgraded(empty_postgres_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="kgserver db upgrade"):
        open_store(empty_postgres_url)
    _, revisions = upgrade_database(empty_postgres_url)
    assert revisions == head_revisions()
    with open_store(empty_postgres_url) as store:
        assert store.graphs() == []


def test_sqlite_is_upgraded_on_first_use(tmp_path: Path, table_counts: Callable[[Store], dict[str, int]]) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'store.db'}"
    with open_store(url) as store:
        with store.engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert {version} == head_revisions()
        assert table_counts(store) == dict.fromkeys(["graphs", "terms", "relations", "triples", "imports"], 0)


def test_schema_from_a_newer_kgserver_is_refused(db_url: str) -> None:
    with open_store(db_url) as store:
        with store.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'fffffffffff'"))
    with pytest.raises(SchemaOutOfDate, match="newer kgserver"):
        open_store(db_url)


def test_database_url_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(config.DATABASE_URL_ENV, raising=False)
    monkeypatch.setenv(config.HOME_ENV, str(tmp_path / "home"))
    assert config.home() == tmp_path / "home"
    assert config.database_url() == f"sqlite:///{tmp_path / 'home' / 'kgserver.db'}"
    monkeypatch.setenv(config.DATABASE_URL_ENV, "postgresql+psycopg://u@h/db")
    assert config.database_url() == "postgresql+psycopg://u@h/db"
    assert config.database_url("sqlite:///explicit.db") == "sqlite:///explicit.db"
    monkeypatch.delenv(config.HOME_ENV)
    monkeypatch.chdir(tmp_path)
    assert config.home() == tmp_path / ".kgserver"


def test_unsupported_database_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unsupported database"):
        open_store("mysql://user@host/db")
    with pytest.raises(ConfigurationError, match="not a database URL"):
        open_store("not a url")
