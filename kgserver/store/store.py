"""The :class:`Store`: graphs in SQL, read back as arrays for training and serving."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, func, select, text

from kgserver.errors import GraphNotFound
from kgserver.store.bulk import ImportTransaction
from kgserver.store.engine import redacted, write_transaction
from kgserver.store.models import SPLIT_NAMES, Graph, ImportRecord, Relation, Term, Triple
from kgserver.store.terms import RDFS_LABEL, TermKind, read_value, term_key

if TYPE_CHECKING:
    import numpy as np

_LOOKUP_CHUNK = 500  # bound the number of bind parameters per IN (...) list


@dataclass
class StoredGraph:
    """A graph as index arrays: ``triples[i] = (head, relation, tail)`` into the lists.

    ``entities`` are the rendered nodes (IRIs, ``_:blank`` ids and, when asked
    for, N-Triples literals) that are head or tail of an included triple, sorted;
    ``relations`` the predicate IRIs used, sorted; ``splits[i]`` is 0 train,
    1 valid, 2 test or -1 none. Triples are sorted by (head, relation, tail), so the
    same graph reads back identically from any backend.
    """

    entities: list[str]
    relations: list[str]
    triples: np.ndarray
    splits: np.ndarray
    revision: int = 0
    """The graph revision these arrays were read at (see :meth:`Store.revision`)."""
    created_at: datetime | None = None
    """When the graph was created (UTC), read with ``revision``: which life of the graph
    the revision counts in (see :class:`GraphState`)."""


@dataclass
class GraphInfo:
    """Counts that describe a graph without reading it.

    ``entities``, ``relations`` and ``triples`` count what ``read_graph`` returns
    by default (literal-valued triples excluded); ``triples`` maps ``train``,
    ``valid``, ``test`` and ``none`` to counts; ``literal_triples`` counts the
    excluded literal-valued statements. Counts are of stored statements: a triple
    stated in two RDF named graphs counts twice here and is read once.
    ``created_at`` is in UTC.
    """

    name: str
    created_at: datetime
    entities: int
    relations: int
    triples: dict[str, int]
    literal_triples: int
    sources: int

    @property
    def total_triples(self) -> int:
        return sum(self.triples.values())


@dataclass(frozen=True)
class GraphState:
    """Where a graph is in its history: ``revision`` (see :meth:`Store.revision`) within the
    life of the graph created at ``created_at``. A graph deleted and imported again starts a
    new life, with its revisions counted again from 0, so two states compare only when their
    ``created_at`` match."""

    created_at: datetime
    revision: int


@dataclass
class DeletedGraph:
    """What ``delete_graph`` removed."""

    name: str
    triples: int
    terms: int
    relations: int
    sources: int


class Store:
    """A kgserver store on one database. Obtain it with :func:`kgserver.store.open_store`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return redacted(self.engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------

    @contextmanager
    def import_transaction(self, graph: str) -> Iterator[ImportTransaction]:
        """One write transaction for an import: committed on success, rolled back on error.

        Waits for another writer's lock at most ``KGSERVER_LOCK_TIMEOUT`` seconds
        (:class:`~kgserver.errors.StoreLocked`)."""
        with write_transaction(self.engine, f"importing into graph {graph!r}") as connection:
            transaction = ImportTransaction(connection, graph)
            try:
                yield transaction
                transaction.finish()  # surfaces any write error before committing
            finally:
                transaction.close()

    def delete_graph(self, name: str) -> DeletedGraph:
        """Remove a graph, its import log, and the terms and relations no other graph uses."""
        with write_transaction(self.engine, f"deleting graph {name!r}") as connection:
            graph_id = _graph_id(connection, name)
            triples = connection.execute(delete(Triple).where(Triple.graph_id == graph_id)).rowcount
            sources = connection.execute(
                delete(ImportRecord).where(ImportRecord.graph_id == graph_id)
            ).rowcount
            connection.execute(delete(Graph).where(Graph.id == graph_id))
            # Set-wise garbage collection: every term no remaining triple mentions.
            terms = connection.execute(
                text(
                    "DELETE FROM terms WHERE id IN (SELECT id FROM terms EXCEPT "
                    "SELECT head FROM triples EXCEPT SELECT tail FROM triples "
                    "EXCEPT SELECT context FROM triples)"
                )
            ).rowcount
            relations = connection.execute(
                text(
                    "DELETE FROM relations WHERE id IN (SELECT id FROM relations EXCEPT "
                    "SELECT relation FROM triples)"
                )
            ).rowcount
        return DeletedGraph(name, triples, terms, relations, sources)

    # -- reading -----------------------------------------------------------------

    def read_graph(self, name: str, include_literals: bool = False) -> StoredGraph:
        """The graph as index arrays (see :class:`StoredGraph`).

        Literal-valued triples are left out unless ``include_literals``: whether
        attribute values take part in link prediction is the caller's choice.
        A statement present in several RDF named graphs is returned once.
        """
        return self.triples_since(name, 0, include_literals)

    def revision(self, graph: str) -> int:
        """The graph's revision: 0 when empty, incremented by every import that adds
        triples (committed with them)."""
        return self.state(graph).revision

    def state(self, graph: str) -> GraphState:
        """The graph's revision and creation time. One query on the unique name index:
        cheap to poll."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(Graph.created_at, Graph.revision).where(Graph.name == graph)
            ).first()
        if row is None:
            raise GraphNotFound(graph)
        return GraphState(created_at=_utc(row.created_at), revision=int(row.revision))

    def triples_since(
        self, graph: str, revision: int, include_literals: bool = False, upto: int | None = None
    ) -> StoredGraph:
        """The triples imports added to ``graph`` after ``revision``, as :meth:`read_graph`
        returns a whole graph (entities and relations are those the new triples use).

        The result's ``revision`` is the graph's revision read first (or ``upto``, when
        given and lower); only triples up to it are returned, so a concurrent import is
        either wholly in or wholly out. A triple stated again later keeps the revision that
        first added it. ``created_at`` is read with the revision, in the same query.
        """
        from kgserver.store.arrays import read_arrays  # numpy is needed here only

        with self.engine.connect() as connection:
            row = connection.execute(
                select(Graph.id, Graph.created_at, Graph.revision).where(Graph.name == graph)
            ).first()
            if row is None:
                raise GraphNotFound(graph)
            last = int(row.revision) if upto is None else min(upto, int(row.revision))
            stored = read_arrays(connection, int(row.id), include_literals, (revision, last))
        stored.created_at = _utc(row.created_at)
        return stored

    def prefixes(self, graph: str) -> dict[str, str]:
        """The ``@prefix`` declarations recorded when Turtle/TriG was imported into ``graph``."""
        with self.engine.connect() as connection:
            stored = connection.execute(select(Graph.id, Graph.prefixes).where(Graph.name == graph)).first()
        if stored is None:
            raise GraphNotFound(graph)
        return dict(json.loads(stored.prefixes)) if stored.prefixes else {}

    def labels(self, graph: str, iris: Iterable[str] | None = None) -> dict[str, str]:
        """``rdfs:label`` of IRIs in ``graph`` (all labelled IRIs if ``iris`` is None).

        English is preferred (``en``, then ``en-*``), then a label without language
        tag, then any other, alphabetically by tag so the choice is stable.
        """
        with self.engine.connect() as connection:
            rows = _label_rows(connection, _graph_id(connection, graph), iris)
        best: dict[str, tuple[tuple[int, str, str], str]] = {}
        for iri, stored_label, escaped, lang in rows:
            label = read_value(stored_label, escaped)
            rank = (_language_rank(lang), lang or "", label)
            if iri not in best or rank < best[iri][0]:
                best[iri] = (rank, label)
        return {iri: label for iri, (_, label) in best.items()}

    def labels_by_language(self, graph: str) -> dict[str, dict[str, str]]:
        """Every ``rdfs:label`` of an IRI in ``graph``: IRI -> language tag (``""`` for an
        untagged label) -> label; of several labels with one tag, the smallest."""
        with self.engine.connect() as connection:
            rows = _label_rows(connection, _graph_id(connection, graph))
        labels: dict[str, dict[str, str]] = {}
        for iri, stored_label, escaped, lang in rows:
            label = read_value(stored_label, escaped)
            by_language = labels.setdefault(iri, {})
            tag = (lang or "").lower()
            if tag not in by_language or label < by_language[tag]:
                by_language[tag] = label
        return labels

    def graphs(self) -> list[GraphInfo]:
        """Every graph with its counts, by name: five queries, each grouped by graph, however
        many graphs the store holds."""
        with self.engine.connect() as connection:
            return _graph_infos(connection)


def _utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (SQLite returns the stored UTC time without a zone;
    PostgreSQL returns it in the session's time zone)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _graph_id(connection: Connection, name: str) -> int:
    graph_id = connection.execute(select(Graph.id).where(Graph.name == name)).scalar()
    if graph_id is None:
        raise GraphNotFound(name)
    return int(graph_id)


def _label_rows(connection: Connection, graph_id: int, iris: Iterable[str] | None = None) -> list[Any]:
    """(IRI, stored label, escaped, language) of every rdfs:label of an IRI in the graph
    (of the IRIs in ``iris`` only, when given)."""
    label_relation = connection.execute(
        select(Relation.id).where(Relation.key == term_key(TermKind.IRI, RDFS_LABEL))
    ).scalar()
    if label_relation is None:
        return []
    head, tail = Term.__table__.alias("head_term"), Term.__table__.alias("tail_term")
    query = (
        select(head.c.value, tail.c.value, tail.c.value_escaped, tail.c.lang)
        .select_from(Triple)
        .join(head, head.c.id == Triple.head)
        .join(tail, tail.c.id == Triple.tail)
        .where(
            Triple.graph_id == graph_id,
            Triple.relation == label_relation,
            head.c.kind == TermKind.IRI,
            tail.c.kind == TermKind.LITERAL,
        )
    )
    if iris is None:
        return list(connection.execute(query).all())
    keys = [term_key(TermKind.IRI, iri) for iri in dict.fromkeys(iris)]
    rows: list[Any] = []
    for start in range(0, len(keys), _LOOKUP_CHUNK):
        rows.extend(connection.execute(query.where(head.c.key.in_(keys[start : start + _LOOKUP_CHUNK]))).all())
    return rows


def _language_rank(lang: str | None) -> int:
    if lang == "en":
        return 0
    if lang and lang.startswith("en-"):
        return 1
    if not lang:
        return 2
    return 3


def _no_triples() -> dict[str, int]:
    return {name: 0 for name in ("train", "valid", "test", "none")}


def _graph_infos(connection: Connection) -> list[GraphInfo]:
    """:class:`GraphInfo` of every graph, by name."""
    is_literal = (Term.kind == TermKind.LITERAL).label("is_literal")
    triples: dict[int, dict[str, int]] = {}
    literal_triples: dict[int, int] = {}
    for graph_id, split, literal, count in connection.execute(
        select(Triple.graph_id, Triple.split, is_literal, func.count())
        .join(Term, Term.id == Triple.tail)
        .group_by(Triple.graph_id, Triple.split, is_literal)
    ):
        if literal:
            literal_triples[graph_id] = literal_triples.get(graph_id, 0) + count
        else:
            by_split = triples.setdefault(graph_id, _no_triples())
            by_split["none" if split is None else SPLIT_NAMES[split]] += count

    entity_triples = (
        select(Triple.graph_id, Triple.head, Triple.tail, Triple.relation)
        .join(Term, Term.id == Triple.tail)
        .where(Term.kind != TermKind.LITERAL)
        .subquery()
    )
    nodes = (
        select(entity_triples.c.graph_id, entity_triples.c.head.label("node"))
        .union(select(entity_triples.c.graph_id, entity_triples.c.tail))
        .subquery()
    )
    entities: dict[int, int] = dict(
        connection.execute(select(nodes.c.graph_id, func.count()).group_by(nodes.c.graph_id)).tuples().all()
    )
    relations: dict[int, int] = dict(
        connection.execute(
            select(entity_triples.c.graph_id, func.count(func.distinct(entity_triples.c.relation))).group_by(
                entity_triples.c.graph_id
            )
        ).tuples().all()
    )
    sources: dict[int, int] = dict(
        connection.execute(
            select(ImportRecord.graph_id, func.count()).group_by(ImportRecord.graph_id)
        ).tuples().all()
    )
    graphs = connection.execute(select(Graph.id, Graph.name, Graph.created_at).order_by(Graph.name)).all()
    return [
        GraphInfo(
            name=name,
            # SQLite keeps no time zone; every timestamp kgserver writes is UTC.
            created_at=_utc(created_at),
            entities=int(entities.get(graph_id, 0)),
            relations=int(relations.get(graph_id, 0)),
            triples=triples.get(graph_id) or _no_triples(),
            literal_triples=int(literal_triples.get(graph_id, 0)),
            sources=int(sources.get(graph_id, 0)),
        )
        for graph_id, name, created_at in graphs
    ]
