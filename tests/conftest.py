"""Database fixtures shared by every test area.

``db_url`` is parametrized over the two supported backends: a SQLite file in the
test's temporary directory, and the real PostgreSQL server
(``KGSERVER_TEST_POSTGRES``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
with a fresh schema of its own, created for the test and dropped (with everything
in it) after it. The URL pins that schema through ``search_path``, so the store,
Alembic and every query see only it. A schema isolates as fully as a database for
kgserver's purposes and costs milliseconds instead of a CREATE DATABASE (a copy of
the template) per test. Both backends are at the current schema revision when the
test starts. An unreachable PostgreSQL fails the test with the reason; it is
never skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

if TYPE_CHECKING:
    from kgserver.store import Store

BACKENDS = ("sqlite", "postgresql")
POSTGRES_ENV = "KGSERVER_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT / ".." / "shared"


def _maintenance_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)


def _admin_connection():  # type: ignore[no-untyped-def]
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(_maintenance_url())
    try:
        return psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, password=url.password,
            dbname=url.database, autocommit=True, connect_timeout=10,
        )
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL at {url.render_as_string(hide_password=True)} is not reachable "
            f"(set {POSTGRES_ENV}): {error}",
            pytrace=False,
        )


@contextmanager
def postgres_database(*, upgraded: bool = True) -> Iterator[str]:
    """A store URL on PostgreSQL with a new, uniquely named schema, dropped afterwards."""
    from sqlalchemy.engine import make_url

    schema = f"kgserver_test_{uuid.uuid4().hex[:12]}"
    with _admin_connection() as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(_maintenance_url())
    url = url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )
    try:
        if upgraded:
            from kgserver.store import upgrade_database

            upgrade_database(url)
        yield url
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    """A SQLite file URL in ``directory`` (the schema is created on first open)."""
    yield f"sqlite:///{directory / f'kgserver-{uuid.uuid4().hex[:8]}.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL at the current schema, on each backend in turn."""
    if request.param == "sqlite":
        with sqlite_database(tmp_path) as url:
            from kgserver.store import upgrade_database

            upgrade_database(url)
            yield url
    else:
        with postgres_database() as url:
            yield url


@pytest.fixture(scope="session")
def database_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], AbstractContextManager[str]]:
    """``database_factory(backend)`` -> context manager yielding a fresh store URL, for
    fixtures with a wider scope than one test."""

    def make(backend: str) -> AbstractContextManager[str]:
        if backend == "sqlite":
            return sqlite_database(tmp_path_factory.mktemp("db"))
        if backend == "postgresql":
            return postgres_database()
        raise ValueError(f"unknown backend {backend!r}")

    return make


@pytest.fixture()
def empty_postgres_url() -> Iterator[str]:
    """A PostgreSQL store URL that was never upgraded (schema behind)."""
    with postgres_database(upgraded=False) as url:
        yield url


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only datasets and W3C suites next to the repository."""
    path = SHARED.resolve()
    if not path.is_dir():
        pytest.fail(f"{path} (datasets, W3C RDF tests) is missing", pytrace=False)
    return path


class StoredTerm(NamedTuple):
    """A term as the store keeps it (``datatype`` and ``lang`` for literals only)."""

    kind: int
    value: str
    datatype: str | None = None
    lang: str | None = None


StoredQuad = tuple[StoredTerm, str, StoredTerm, "StoredTerm | None"]


def _table_counts(store: Store) -> dict[str, int]:
    from sqlalchemy import func, select

    from kgserver.store.models import Base

    with store.engine.connect() as connection:
        return {
            table.name: int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in Base.metadata.sorted_tables
        }


def _stored_quads(store: Store, graph: str) -> list[StoredQuad]:
    from sqlalchemy import select

    from kgserver.store.models import Graph, Relation, Term, Triple
    from kgserver.store.terms import read_value

    head, tail, context = (Term.__table__.alias(alias) for alias in ("h", "o", "c"))
    query = (
        select(
            head.c.kind, head.c.value, head.c.value_escaped,
            Relation.iri,
            tail.c.kind, tail.c.value, tail.c.value_escaped, tail.c.datatype, tail.c.lang,
            context.c.kind, context.c.value, context.c.value_escaped,
        )
        .select_from(Triple)
        .join(Graph, Graph.id == Triple.graph_id)
        .join(head, head.c.id == Triple.head)
        .join(tail, tail.c.id == Triple.tail)
        .join(Relation, Relation.id == Triple.relation)
        .outerjoin(context, context.c.id == Triple.context)
        .where(Graph.name == graph)
    )
    with store.engine.connect() as connection:
        return [
            (
                StoredTerm(hk, read_value(hv, he)),
                predicate,
                StoredTerm(tk, read_value(tv, te), dt, lang),
                None if ck is None else StoredTerm(ck, read_value(cv, ce)),
            )
            for hk, hv, he, predicate, tk, tv, te, dt, lang, ck, cv, ce in connection.execute(query)
        ]


@pytest.fixture(scope="session")
def table_counts() -> Callable[[Store], dict[str, int]]:
    """``table_counts(store)``: the row count of every table of the store, what "the store
    is unchanged" is checked against."""
    return _table_counts


@pytest.fixture(scope="session")
def stored_quads() -> Callable[[Store, str], list[StoredQuad]]:
    """``stored_quads(store, graph)``: every statement of the graph as it is stored,
    (subject, predicate IRI, object, named graph or None), read straight from the tables."""
    return _stored_quads


SUMMARY_PROPERTY = "terminal_summary"


@pytest.fixture()
def summary_lines(record_property: Callable[[str, object], None]) -> Callable[[str, list[str]], None]:
    """``summary_lines(section, lines)``: lines the run prints under ``section`` in its terminal
    summary. They travel as a user property of the test's report, so a test run by a
    pytest-xdist worker is summarised by the controlling process as well."""

    def record(section: str, lines: list[str]) -> None:
        record_property(SUMMARY_PROPERTY, (section, lines))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each section's recorded groups of lines, the groups sorted by their first line."""
    sections: dict[str, list[list[str]]] = {}
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", None) != "call":
                continue
            for name, value in report.user_properties:
                if name == SUMMARY_PROPERTY:
                    section, lines = value
                    sections.setdefault(section, []).append(lines)
    for section, groups in sorted(sections.items()):
        terminalreporter.section(section)
        for lines in sorted(groups):
            for line in lines:
                terminalreporter.write_line(line)
