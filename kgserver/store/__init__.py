"""The SQL triple store: graphs, a shared term dictionary, triples with splits, an import log.

``open_store()`` is the way in. It resolves the URL (``--db``, then
``KGSERVER_DATABASE_URL``, then SQLite under ``KGSERVER_HOME``) and checks the
schema: a SQLite database is embedded and owned by this process, so it is brought
up to date automatically; a PostgreSQL database is shared infrastructure, so one
that is behind raises :class:`~kgserver.errors.SchemaOutOfDate` and the operator
runs ``kgserver db upgrade`` deliberately. A database that cannot be reached or
opened raises :class:`~kgserver.errors.StoreUnavailable` (URL without password,
and the reason), one that another writer keeps locked
:class:`~kgserver.errors.StoreLocked`.
"""

from __future__ import annotations

from kgserver.config import database_url
from kgserver.store.engine import backend_of, make_engine, redacted, translated_errors
from kgserver.store.migrate import is_current, require_current, upgrade
from kgserver.store.store import DeletedGraph, GraphInfo, GraphState, Store, StoredGraph
from kgserver.store.terms import TermKind

__all__ = [
    "DeletedGraph",
    "GraphInfo",
    "GraphState",
    "Store",
    "StoredGraph",
    "TermKind",
    "open_store",
    "upgrade_database",
]


def open_store(url: str | None = None) -> Store:
    """Open the store at ``url`` (resolved as described above), schema checked."""
    resolved = database_url(url)
    engine = make_engine(resolved)
    try:
        with translated_errors(engine, "opening the store"):
            if backend_of(resolved) == "sqlite":
                if not is_current(engine):
                    upgrade(engine)
            else:
                require_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def upgrade_database(url: str | None = None) -> tuple[str, set[str]]:
    """Apply every migration to the database at ``url``; returns (redacted URL, revisions)."""
    resolved = database_url(url)
    engine = make_engine(resolved)
    try:
        with translated_errors(engine, "upgrading the schema"):
            return redacted(engine), upgrade(engine)
    finally:
        engine.dispose()
