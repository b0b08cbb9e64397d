"""Reading a graph into index arrays (numpy), kept apart so that opening a store
and importing do not pay for importing numpy."""

from __future__ import annotations

import itertools

import numpy as np
from sqlalchemy import ColumnElement, Connection, and_, func, select

from kgserver.store.models import DEFAULT_CONTEXT, Relation, Term, Triple
from kgserver.store.store import StoredGraph
from kgserver.store.terms import TermKind, read_value, render


def read_arrays(
    connection: Connection,
    graph_id: int,
    include_literals: bool,
    revisions: tuple[int, int],
) -> StoredGraph:
    """The graph's triples added in revisions ``after < revision <= upto`` as indices
    into the sorted lists of the entities and relations they use."""
    rows = _triple_rows(connection, graph_id, include_literals, revisions)
    node_ids, rendered = _graph_nodes(connection, graph_id, include_literals, revisions)
    relation_rows = connection.execute(select(Relation.id, Relation.iri)).all()

    if rows.size and np.any(rows[:, 4] != DEFAULT_CONTEXT):
        rows = _distinct_statements(rows)
    used_nodes = np.unique(np.concatenate([rows[:, 0], rows[:, 2]]))
    keep = np.isin(node_ids, used_nodes)
    node_ids = node_ids[keep]
    rendered = [label for label, kept in zip(rendered, keep) if kept]
    entities, node_index = _vocabulary(node_ids, rendered)

    used_relations = set(np.unique(rows[:, 1]).tolist())
    relation_ids = np.array([rid for rid, _ in relation_rows if rid in used_relations], dtype=np.int64)
    relation_iris = [iri for rid, iri in relation_rows if rid in used_relations]
    relations, relation_index = _vocabulary(relation_ids, relation_iris)

    triples = np.stack(
        [node_index(rows[:, 0]), relation_index(rows[:, 1]), node_index(rows[:, 2])], axis=1
    ).astype(np.int64).reshape(-1, 3)
    order = np.lexsort((triples[:, 2], triples[:, 1], triples[:, 0]))
    return StoredGraph(
        entities=entities,
        relations=relations,
        triples=np.ascontiguousarray(triples[order]),
        splits=rows[order, 3].astype(np.int8),
        revision=revisions[1],
    )


def _in_revisions(revisions: tuple[int, int]) -> ColumnElement[bool]:
    after, upto = revisions
    return and_(Triple.revision > after, Triple.revision <= upto)


def _triple_rows(
    connection: Connection, graph_id: int, include_literals: bool, revisions: tuple[int, int]
) -> np.ndarray:
    """``[n, 5]`` int64: head, relation, tail, split (-1 none), context."""
    query = select(
        Triple.head, Triple.relation, Triple.tail, func.coalesce(Triple.split, -1), Triple.context
    ).where(Triple.graph_id == graph_id, _in_revisions(revisions))
    if not include_literals:
        query = query.join(Term, Term.id == Triple.tail).where(Term.kind != TermKind.LITERAL)
    values = itertools.chain.from_iterable(connection.execute(query))
    return np.fromiter(values, dtype=np.int64).reshape(-1, 5)


def _graph_nodes(
    connection: Connection, graph_id: int, include_literals: bool, revisions: tuple[int, int]
) -> tuple[np.ndarray, list[str]]:
    """Ids and rendered strings of the terms in head or tail position in the graph."""
    in_graph = (Triple.graph_id == graph_id, _in_revisions(revisions))
    used = select(Triple.head).where(*in_graph).union(select(Triple.tail).where(*in_graph))
    query = select(Term.id, Term.kind, Term.value, Term.value_escaped, Term.datatype, Term.lang).where(
        Term.id.in_(used)
    )
    if not include_literals:
        query = query.where(Term.kind != TermKind.LITERAL)
    rows = connection.execute(query).all()
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    return ids, [
        render(kind, read_value(value, escaped), datatype, lang)
        for _, kind, value, escaped, datatype, lang in rows
    ]


def _distinct_statements(rows: np.ndarray) -> np.ndarray:
    """One row per (head, relation, tail) across named graphs; an assigned split wins."""
    split_rank = np.where(rows[:, 3] < 0, 3, rows[:, 3])
    order = np.lexsort((split_rank, rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = np.any(rows[1:, :3] != rows[:-1, :3], axis=1)
    return rows[first]


def _vocabulary(ids: np.ndarray, names: list[str]):  # type: ignore[no-untyped-def]
    """Sorted names, and a function mapping database ids to positions in them."""
    by_name = sorted(range(len(names)), key=names.__getitem__)
    position = np.empty(len(names), dtype=np.int64)
    position[by_name] = np.arange(len(names), dtype=np.int64)
    by_id = np.argsort(ids, kind="stable")
    sorted_ids = ids[by_id]

    def index(database_ids: np.ndarray) -> np.ndarray:
        return position[by_id[np.searchsorted(sorted_ids, database_ids)]]

    return [names[i] for i in by_name], index


