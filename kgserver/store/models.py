"""The store's schema as SQLAlchemy 2 typed models.

The tables are created by the Alembic migrations in ``migrations/``; these models
are the Python view of them (and the migrations' ``target_metadata``).

Design choices that matter for speed and correctness:

* ``triples`` has a composite primary key ``(graph_id, head, relation, tail,
  context)``. It makes a triple unique per graph and is the one index both hot
  queries need: "all triples of graph G" is a prefix scan on ``graph_id``, "triples
  with head h and relation r in G" a prefix scan on ``(graph_id, head, relation)``.
  On SQLite the table is ``WITHOUT ROWID`` so that this index *is* the table.
* Term and relation ids are allocated by the importer, which holds the write lock
  and the whole dictionary in memory, so they are plain (non-autoincrement) keys.
* ``triples.head/tail/context`` and ``triples.relation`` carry no foreign keys:
  the importer is the only writer and only references ids it just stored, and the
  term garbage collection after ``delete_graph`` is one set-wise anti-join. A
  per-row foreign-key check would slow every bulk insert and, without extra
  indexes on ``head``/``tail``, make deleting terms scan ``triples`` once per term.
* ``context`` is the RDF named graph a statement came in (N-Quads, TriG); ``0``
  means the default graph (a sentinel rather than NULL so it can be part of the key).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# 64-bit on PostgreSQL; on SQLite, INTEGER is 64-bit already and an INTEGER primary
# key is the rowid (no separate index).
TermIdType = BigInteger().with_variant(Integer(), "sqlite")

DEFAULT_CONTEXT = 0
"""``triples.context`` of a statement in the default graph (no term has id 0)."""
SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
SPLIT_NAMES = {code: name for name, code in SPLIT_CODES.items()}


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""


class Graph(Base):
    """A named knowledge graph: the unit users import into, train on and delete."""

    __tablename__ = "graphs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Incremented by every import that adds triples, in that import's transaction.
    revision: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # The @prefix declarations of imported Turtle/TriG, a JSON object prefix -> namespace.
    prefixes: Mapped[str | None] = mapped_column(Text)


class Term(Base):
    """The term dictionary: IRIs, blank nodes and literals, shared by all graphs.

    Blank node values are scoped by the content hash of the document they came
    from, so equal labels in different documents are different nodes while
    re-importing the same document maps onto the same nodes.
    """

    __tablename__ = "terms"

    id: Mapped[int] = mapped_column(TermIdType, primary_key=True, autoincrement=False)
    kind: Mapped[int] = mapped_column(SmallInteger)
    value: Mapped[str] = mapped_column(Text)
    # True when ``value`` is JSON-escaped because it contains NUL (see store.terms).
    value_escaped: Mapped[bool] = mapped_column(Boolean, default=False)
    datatype: Mapped[str | None] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(String(64))
    key: Mapped[bytes] = mapped_column(LargeBinary(16), unique=True)


class Relation(Base):
    """Predicates (always IRIs), numbered separately so relation ids stay small."""

    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    iri: Mapped[str] = mapped_column(Text)
    key: Mapped[bytes] = mapped_column(LargeBinary(16), unique=True)


class Triple(Base):
    """One statement of a graph, with the split (0 train, 1 valid, 2 test) if any."""

    __tablename__ = "triples"
    __table_args__ = (
        Index("ix_triples_graph_revision", "graph_id", "revision"),
        {"sqlite_with_rowid": False},
    )

    graph_id: Mapped[int] = mapped_column(
        ForeignKey("graphs.id", ondelete="CASCADE"), primary_key=True
    )
    head: Mapped[int] = mapped_column(TermIdType, primary_key=True)
    relation: Mapped[int] = mapped_column(Integer, primary_key=True)
    tail: Mapped[int] = mapped_column(TermIdType, primary_key=True)
    context: Mapped[int] = mapped_column(TermIdType, primary_key=True)
    split: Mapped[int | None] = mapped_column(SmallInteger)
    # The graph revision whose import added this row (see ``Graph.revision``).
    revision: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ImportRecord(Base):
    """The import log: one row per source file imported into a graph."""

    __tablename__ = "imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    graph_id: Mapped[int] = mapped_column(ForeignKey("graphs.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(16))
    split: Mapped[int | None] = mapped_column(SmallInteger)
    base: Mapped[str | None] = mapped_column(Text)
    triples: Mapped[int] = mapped_column(BigInteger)
    added: Mapped[int] = mapped_column(BigInteger)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
