"""The write side of the store: one import transaction with an in-memory term dictionary.

An :class:`ImportTransaction` takes the store's write lock, loads the whole term
and relation dictionaries once, and from then on hands out ids from Python dicts:
a term seen before costs one dict lookup, a new term gets the next free id and is
buffered. Triples are written in large batches with the fastest route each
backend has (``executemany`` on SQLite, ``COPY`` on PostgreSQL); duplicates are
dropped by the primary key (``INSERT OR IGNORE`` / ``ON CONFLICT DO NOTHING``) and
the row counts the database reports tell added from skipped.

Every row an import adds is stamped with the graph's next revision, and the
graph's ``revision`` moves to it at the end if anything was added (:meth:`ImportTransaction.finish`),
so readers see the new triples and the new revision together or neither.

Everything happens in the caller's single transaction: nothing is visible, and
nothing remains, unless it commits.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Connection, insert, select, update

from kgserver.store.models import Graph, ImportRecord
from kgserver.store.terms import TermKind, read_value, relation_key, store_value, term_key

# A new term row: (id, kind, stored value, value_escaped, datatype, lang, key).
NewTerm = tuple[int, int, str, bool, "str | None", "str | None", bytes]

# A triple row as the writers take it: (graph_id, head, relation, tail, context, split).
TripleRow = tuple[int, int, int, int, int, "int | None"]


class _Backend(Protocol):
    revision: int

    def insert_terms(self, rows: list[NewTerm]) -> None: ...

    def insert_relations(self, rows: list[tuple[int, str, bytes]]) -> None: ...

    def insert_triples(self, rows: list[TripleRow]) -> int: ...


class _SQLiteBackend:
    """``executemany`` on the raw sqlite3 cursor: the fastest insert pysqlite offers."""

    def __init__(self, connection: Connection, revision: int) -> None:
        self._cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self.revision = revision

    def insert_terms(self, rows: list[NewTerm]) -> None:
        self._cursor.executemany(
            "INSERT INTO terms (id, kind, value, value_escaped, datatype, lang, key) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows
        )

    def insert_relations(self, rows: list[tuple[int, str, bytes]]) -> None:
        self._cursor.executemany("INSERT INTO relations (id, iri, key) VALUES (?, ?, ?)", rows)

    def insert_triples(self, rows: list[TripleRow]) -> int:
        self._cursor.executemany(
            "INSERT OR IGNORE INTO triples (graph_id, head, relation, tail, context, split, revision) "
            f"VALUES (?, ?, ?, ?, ?, ?, {int(self.revision)})",
            rows,
        )
        return self._cursor.rowcount


class _PostgresBackend:
    """``COPY`` through psycopg; triples go via a staging table to skip duplicates."""

    def __init__(self, connection: Connection, revision: int) -> None:
        self._cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        self._staging = False
        self.revision = revision

    def insert_terms(self, rows: list[NewTerm]) -> None:
        self._copy("COPY terms (id, kind, value, value_escaped, datatype, lang, key) FROM STDIN", rows)

    def insert_relations(self, rows: list[tuple[int, str, bytes]]) -> None:
        self._copy("COPY relations (id, iri, key) FROM STDIN", rows)

    def insert_triples(self, rows: list[TripleRow]) -> int:
        if not self._staging:
            self._cursor.execute(
                "CREATE TEMP TABLE kgserver_staging (graph_id integer, head bigint, "
                "relation integer, tail bigint, context bigint, split smallint) ON COMMIT DROP"
            )
            self._staging = True
        self._copy("COPY kgserver_staging FROM STDIN", rows)
        self._cursor.execute(
            "INSERT INTO triples (graph_id, head, relation, tail, context, split, revision) "
            f"SELECT graph_id, head, relation, tail, context, split, {int(self.revision)} "
            "FROM kgserver_staging "
            "ON CONFLICT DO NOTHING"
        )
        added = self._cursor.rowcount
        self._cursor.execute("TRUNCATE kgserver_staging")
        return added

    def _copy(self, statement: str, rows: Sequence[tuple[object, ...]]) -> None:
        with self._cursor.copy(statement) as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)


class ImportTransaction:
    """Id allocation and batched writes for one import, inside one open transaction
    that holds the store's write lock (:func:`kgserver.store.engine.write_transaction`),
    so ids allocated from the in-memory dictionary never collide with another writer's.

    Terms are looked up by value (``iri``, ``blank``, ``literal``, ``relation``).
    ``add_triples`` writes a batch together with the terms that are new since the
    last one; ``added()`` returns how many triples were new since it was last asked.

    On PostgreSQL the batch goes to a single writer thread and ``add_triples``
    returns at once: the server's work on one batch (the INSERT from the staging
    table) then overlaps with parsing the next, since psycopg releases the GIL
    while it waits for the server. At most ``MAX_PENDING`` batches wait, which
    bounds memory, and the connection is used by the writer only while batches are
    pending (``added()`` drains them). SQLite does its work in-process, releasing
    the GIL once per row, so a writer thread there would only contend for the GIL
    with the parser; it writes synchronously.
    """

    MAX_PENDING = 2

    def __init__(self, connection: Connection, graph: str) -> None:
        self._connection = connection
        dialect = connection.dialect.name
        self.graph_id = self._graph_id(graph)
        self.revision = 1 + int(
            connection.execute(select(Graph.revision).where(Graph.id == self.graph_id)).scalar_one()
        )
        """The revision this import's triples get (the graph's, once :meth:`finish` ran)."""
        self.graph_revision = self.revision - 1
        """The graph's revision: before the import, and after :meth:`finish` the one it commits."""
        self._backend: _Backend = (
            _SQLiteBackend(connection, self.revision)
            if dialect == "sqlite"
            else _PostgresBackend(connection, self.revision)
        )
        self._iris: dict[str, int] = {}
        self._blanks: dict[str, int] = {}
        self._literals: dict[tuple[str, str | None, str | None], int] = {}
        self._relations: dict[str, int] = {}
        self._new_terms: list[NewTerm] = []
        self._new_relations: list[tuple[int, str, bytes]] = []
        self._load_dictionary()
        self._writer = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="kgserver-import")
            if dialect == "postgresql"
            else None
        )
        self._pending: deque[Future[int]] = deque()
        self._added = 0
        self._added_in_total = 0
        self._prefixes: dict[str, str] = {}

    def _graph_id(self, name: str) -> int:
        """The graph's id, creating the graph (inside this transaction) if it is new."""
        existing = self._connection.execute(select(Graph.id).where(Graph.name == name)).scalar()
        if existing is not None:
            return int(existing)
        created = self._connection.execute(
            insert(Graph).values(name=name, created_at=datetime.now(UTC)).returning(Graph.id)
        )
        return int(created.scalar_one())

    def _load_dictionary(self) -> None:
        driver = self._connection.exec_driver_sql
        iris, blanks, literals = self._iris, self._blanks, self._literals
        for term_id, kind, stored, escaped, datatype, lang in driver(
            "SELECT id, kind, value, value_escaped, datatype, lang FROM terms"
        ):
            value = read_value(stored, escaped)
            if kind == TermKind.IRI:
                iris[value] = term_id
            elif kind == TermKind.BLANK:
                blanks[value] = term_id
            else:
                literals[(value, datatype, lang)] = term_id
        self._relations.update(
            (iri, relation_id) for relation_id, iri in driver("SELECT id, iri FROM relations")
        )
        # Ids start at 1: 0 is DEFAULT_CONTEXT (the default graph), and readers rely
        # on every real id being true (``known(term) or new(term)``).
        self._next_term = int(driver("SELECT COALESCE(MAX(id), 0) FROM terms").scalar_one()) + 1
        self._next_relation = (
            int(driver("SELECT COALESCE(MAX(id), 0) FROM relations").scalar_one()) + 1
        )

    def _new_term(self, kind: TermKind, value: str, datatype: str | None, lang: str | None) -> int:
        term_id = self._next_term
        self._next_term += 1
        stored, escaped = store_value(value)
        self._new_terms.append(
            (term_id, int(kind), stored, escaped, datatype, lang, term_key(kind, value, datatype, lang))
        )
        return term_id

    def iri(self, value: str) -> int:
        """The id of the IRI ``value``, allocated if new."""
        term_id = self._iris.get(value)
        if term_id is None:
            term_id = self._iris[value] = self._new_term(TermKind.IRI, value, None, None)
        return term_id

    def blank(self, value: str) -> int:
        """The id of the (already document-scoped) blank node ``value``."""
        term_id = self._blanks.get(value)
        if term_id is None:
            term_id = self._blanks[value] = self._new_term(TermKind.BLANK, value, None, None)
        return term_id

    def literal(self, value: str, datatype: str, lang: str | None) -> int:
        """The id of a literal with its datatype IRI and language tag (or None)."""
        key = (value, datatype, lang)
        term_id = self._literals.get(key)
        if term_id is None:
            term_id = self._literals[key] = self._new_term(TermKind.LITERAL, value, datatype, lang)
        return term_id

    def relation(self, iri: str) -> int:
        """The id of the predicate ``iri``, allocated if new."""
        relation_id = self._relations.get(iri)
        if relation_id is None:
            relation_id = self._relations[iri] = self._next_relation
            self._next_relation += 1
            self._new_relations.append((relation_id, iri, relation_key(iri)))
        return relation_id

    def add_triples(self, rows: list[TripleRow]) -> None:
        """Write (or on PostgreSQL queue) ``rows`` and the terms allocated since the last call."""
        terms, relations = self._new_terms, self._new_relations
        self._new_terms, self._new_relations = [], []
        if self._writer is None:
            self._added += self._write(terms, relations, rows)
            return
        while len(self._pending) >= self.MAX_PENDING:
            self._added += self._pending.popleft().result()
        self._pending.append(self._writer.submit(self._write, terms, relations, rows))

    def _write(
        self, terms: list[NewTerm], relations: list[tuple[int, str, bytes]], rows: list[TripleRow]
    ) -> int:
        """Terms first (triples refer to them), then the triples; returns triples added."""
        if terms:
            self._backend.insert_terms(terms)
        if relations:
            self._backend.insert_relations(relations)
        return self._backend.insert_triples(rows) if rows else 0

    def added(self) -> int:
        """Wait for every queued batch; the number of new triples written since the last call."""
        while self._pending:
            self._added += self._pending.popleft().result()
        added, self._added = self._added, 0
        self._added_in_total += added
        return added

    def record_prefixes(self, prefixes: dict[str, str]) -> None:
        """Remember a document's ``@prefix`` declarations (prefix -> namespace IRI) for the
        graph; written by :meth:`finish`. A prefix declared again with another namespace
        takes the later one."""
        self._prefixes.update(prefixes)

    def finish(self) -> int:
        """Drain the writer, store the recorded prefixes and, if this import added any
        triple, move the graph to :attr:`revision`; returns the graph's revision now.
        Called just before commit."""
        self.added()
        if self._prefixes:
            graph = Graph.id == self.graph_id
            stored = self._connection.execute(select(Graph.prefixes).where(graph)).scalar()
            prefixes = {**(json.loads(stored) if stored else {}), **self._prefixes}
            self._connection.execute(
                update(Graph).where(graph).values(prefixes=json.dumps(prefixes, sort_keys=True))
            )
        if self._added_in_total:
            self._connection.execute(
                update(Graph).where(Graph.id == self.graph_id).values(revision=self.revision)
            )
            self.graph_revision = self.revision
        return self.graph_revision

    def close(self) -> None:
        """Stop the writer after its current batch. Called before commit or rollback; on
        the error path the queued batches' own errors are moot (the transaction rolls back)."""
        for future in self._pending:
            future.cancel()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
        self._pending.clear()

    def record_source(
        self,
        *,
        source: str,
        sha256: str,
        format: str,
        split: int | None,
        base: str | None,
        triples: int,
        added: int,
    ) -> None:
        """Append one file to the import log (call ``added()`` first: it drains the writer)."""
        if self._pending:
            raise RuntimeError("record_source() while batches are still being written")
        self._connection.execute(
            insert(ImportRecord).values(
                graph_id=self.graph_id,
                source=source,
                sha256=sha256,
                format=format,
                split=split,
                base=base,
                triples=triples,
                added=added,
                imported_at=datetime.now(UTC),
            )
        )
