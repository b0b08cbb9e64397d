"""The :class:`Store`: graphs in SQL, read back as arrays for training and serving."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, delete, func, select, text

from kgserver.errors import GraphNotFound
from kgserver.store.bulk import PG_WRITE_LOCK, ImportTransaction
from kgserver.store.models import SPLIT_NAMES, Graph, ImportRecord, Relation, Term, Triple
from kgserver.store.terms import RDFS_LABEL, Term as StoredTerm, TermKind, read_value, term_key

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
    def backend(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

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
        """One write transaction for an import: committed on success, rolled back on error."""
        with self.engine.connect() as connection:
            connection.execution_options(sqlite_immediate=True)
            with connection.begin():
                transaction = ImportTransaction(connection, graph)
                try:
                    yield transaction
                    transaction.added()  # surface any write error before committing
                finally:
                    transaction.close()

    def delete_graph(self, name: str) -> DeletedGraph:
        """Remove a graph, its import log, and the terms and relations no other graph uses."""
        with self.engine.connect() as connection:
            connection.execution_options(sqlite_immediate=True)
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))
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

    def has_graph(self, name: str) -> bool:
        """Whether a graph of that name exists."""
        with self.engine.connect() as connection:
            return connection.execute(select(Graph.id).where(Graph.name == name)).first() is not None

    def read_graph(self, name: str, include_literals: bool = False) -> StoredGraph:
        """The graph as index arrays (see :class:`StoredGraph`).

        Literal-valued triples are left out unless ``include_literals``: whether
        attribute values take part in link prediction is the caller's choice.
        A statement present in several RDF named graphs is returned once.
        """
        from kgserver.store.arrays import read_arrays  # numpy is needed here only

        with self.engine.connect() as connection:
            return read_arrays(connection, _graph_id(connection, name), include_literals)

    def labels(self, graph: str, iris: Iterable[str] | None = None) -> dict[str, str]:
        """``rdfs:label`` of IRIs in ``graph`` (all labelled IRIs if ``iris`` is None).

        English is preferred (``en``, then ``en-*``), then a label without language
        tag, then any other, alphabetically by tag so the choice is stable.
        """
        with self.engine.connect() as connection:
            graph_id = _graph_id(connection, graph)
            label_relation = connection.execute(
                select(Relation.id).where(Relation.key == term_key(TermKind.IRI, RDFS_LABEL))
            ).scalar()
            if label_relation is None:
                return {}
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
                rows = connection.execute(query).all()
            else:
                keys = [term_key(TermKind.IRI, iri) for iri in dict.fromkeys(iris)]
                rows = []
                for start in range(0, len(keys), _LOOKUP_CHUNK):
                    chunk = keys[start : start + _LOOKUP_CHUNK]
                    rows.extend(connection.execute(query.where(head.c.key.in_(chunk))).all())
        best: dict[str, tuple[tuple[int, str, str], str]] = {}
        for iri, stored_label, escaped, lang in rows:
            label = read_value(stored_label, escaped)
            rank = (_language_rank(lang), lang or "", label)
            if iri not in best or rank < best[iri][0]:
                best[iri] = (rank, label)
        return {iri: label for iri, (_, label) in best.items()}

    def graphs(self) -> list[GraphInfo]:
        """Every graph with its counts, by name."""
        with self.engine.connect() as connection:
            graphs = connection.execute(select(Graph.id, Graph.name, Graph.created_at).order_by(Graph.name)).all()
            return [_graph_info(connection, *graph) for graph in graphs]

    def graph_info(self, name: str) -> GraphInfo:
        """The counts of one graph."""
        with self.engine.connect() as connection:
            graph = connection.execute(
                select(Graph.id, Graph.name, Graph.created_at).where(Graph.name == name)
            ).first()
            if graph is None:
                raise GraphNotFound(name)
            return _graph_info(connection, *graph)

    def quads(self, name: str) -> Iterator[tuple[StoredTerm, str, StoredTerm, StoredTerm | None]]:
        """Every statement of the graph as (subject, predicate IRI, object, named graph or None)."""
        head, tail, context = (Term.__table__.alias(alias) for alias in ("h", "o", "c"))
        query = (
            select(
                head.c.kind, head.c.value,
                Relation.iri,
                tail.c.kind, tail.c.value, tail.c.value_escaped, tail.c.datatype, tail.c.lang,
                context.c.kind, context.c.value,
            )
            .select_from(Triple)
            .join(head, head.c.id == Triple.head)
            .join(tail, tail.c.id == Triple.tail)
            .join(Relation, Relation.id == Triple.relation)
            .outerjoin(context, context.c.id == Triple.context)
        )
        with self.engine.connect() as connection:
            graph_id = _graph_id(connection, name)
            for hk, hv, predicate, tk, tv, escaped, dt, lang, ck, cv in connection.execute(
                query.where(Triple.graph_id == graph_id)
            ):
                yield (
                    StoredTerm(TermKind(hk), hv),
                    predicate,
                    StoredTerm(TermKind(tk), read_value(tv, escaped), dt, lang),
                    None if ck is None else StoredTerm(TermKind(ck), cv),
                )

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table: what "the store is unchanged" is checked against."""
        with self.engine.connect() as connection:
            return {
                model.__tablename__: int(connection.execute(select(func.count()).select_from(model)).scalar_one())
                for model in (Graph, Term, Relation, Triple, ImportRecord)
            }


def _graph_id(connection: Connection, name: str) -> int:
    graph_id = connection.execute(select(Graph.id).where(Graph.name == name)).scalar()
    if graph_id is None:
        raise GraphNotFound(name)
    return int(graph_id)


def _language_rank(lang: str | None) -> int:
    if lang == "en":
        return 0
    if lang and lang.startswith("en-"):
        return 1
    if not lang:
        return 2
    return 3


def _graph_info(connection: Connection, graph_id: int, name: str, created_at: datetime) -> GraphInfo:
    is_literal = (Term.kind == TermKind.LITERAL).label("is_literal")
    counts = connection.execute(
        select(Triple.split, is_literal, func.count())
        .join(Term, Term.id == Triple.tail)
        .where(Triple.graph_id == graph_id)
        .group_by(Triple.split, is_literal)
    ).all()
    triples = {name: 0 for name in ("train", "valid", "test", "none")}
    literal_triples = 0
    for split, literal, count in counts:
        if literal:
            literal_triples += count
        else:
            triples[SPLIT_NAMES.get(split, "none")] += count

    entity_triples = (
        select(Triple.head, Triple.tail, Triple.relation)
        .join(Term, Term.id == Triple.tail)
        .where(Triple.graph_id == graph_id, Term.kind != TermKind.LITERAL)
        .subquery()
    )
    nodes = select(entity_triples.c.head).union(select(entity_triples.c.tail)).subquery()
    entities = connection.execute(select(func.count()).select_from(nodes)).scalar_one()
    relations = connection.execute(
        select(func.count(func.distinct(entity_triples.c.relation)))
    ).scalar_one()
    sources = connection.execute(
        select(func.count()).select_from(ImportRecord).where(ImportRecord.graph_id == graph_id)
    ).scalar_one()
    return GraphInfo(
        name=name,
        # SQLite keeps no time zone; every timestamp kgserver writes is UTC.
        created_at=created_at if created_at.tzinfo else created_at.replace(tzinfo=timezone.utc),
        entities=int(entities),
        relations=int(relations),
        triples=triples,
        literal_triples=int(literal_triples),
        sources=int(sources),
    )
