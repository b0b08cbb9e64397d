"""SQLAlchemy engines for the two supported backends, configured for bulk work.

SQLite gets WAL (readers never block the one writer), ``synchronous=NORMAL``
(durable at checkpoints, safe against corruption), a larger page cache, foreign
keys on, and a busy timeout so that a second writer waits (up to
:func:`kgserver.config.lock_timeout`) instead of failing at once.
pysqlite's implicit transactions are switched off and SQLAlchemy emits ``BEGIN``
itself, so a transaction really covers every statement of an import; a connection
with the execution option ``sqlite_immediate=True`` begins with ``BEGIN
IMMEDIATE``, taking the write lock up front (a deferred transaction that reads
first and writes later can fail with SQLITE_BUSY instead of waiting).

Writers are serialised on both backends (:func:`write_transaction`): ids are
allocated from an in-memory dictionary, so two writers must never interleave.
Failures to reach or open the database, and a lock that stays taken, become the
typed errors :class:`~kgserver.errors.StoreUnavailable` and
:class:`~kgserver.errors.StoreLocked` here (:func:`translated_errors`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from kgserver.config import lock_timeout
from kgserver.errors import ConfigurationError, StoreLocked, StoreUnavailable

SQLITE_PRAGMAS = (
    "PRAGMA page_size=8192",  # takes effect when a new file is created
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-131072",  # 128 MiB
    "PRAGMA temp_store=MEMORY",
    "PRAGMA mmap_size=268435456",
)

# PostgreSQL serialises writers through this transaction-scoped advisory lock
# (SQLite through BEGIN IMMEDIATE).
PG_WRITE_LOCK = 0x6B67_7365_7276  # "kgserv"
_PG_LOCK_NOT_AVAILABLE = "55P03"


def backend_of(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``; anything else is a configuration error."""
    try:
        backend = make_url(url).get_backend_name()
    except Exception as error:  # sqlalchemy raises ArgumentError with a terse text
        raise ConfigurationError(f"not a database URL: {url!r} ({error})") from error
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {backend!r} in {url!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    return backend


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file, its directory is created if missing."""
    backend = backend_of(url)
    if backend == "sqlite":
        return _sqlite_engine(url)
    parsed = make_url(url)
    if parsed.drivername == "postgresql":  # plain postgresql:// would pick psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(parsed, pool_pre_ping=True)


def redacted(engine: Engine) -> str:
    """The engine's URL with the password hidden: how errors and messages name a store."""
    return engine.url.render_as_string(hide_password=True)


@contextmanager
def translated_errors(engine: Engine, action: str) -> Iterator[None]:
    """Inside the block, a database error is the store's failure to open or to grant
    the write lock: it becomes :class:`StoreLocked` (``action`` says what was being
    done) or :class:`StoreUnavailable` (with the driver's one-line reason). Wrap only
    connecting, the schema check and taking the lock in it, never a query's work."""
    try:
        yield
    except DBAPIError as error:
        if _is_lock_timeout(error):
            raise StoreLocked(redacted(engine), action, lock_timeout()) from error
        lines = str(error.orig).strip().splitlines()
        raise StoreUnavailable(redacted(engine), lines[0] if lines else type(error.orig).__name__) from error


@contextmanager
def write_transaction(engine: Engine, action: str) -> Iterator[Connection]:
    """A connection in a transaction that holds the store's write lock; committed when
    the block ends, rolled back if it raises.

    A second writer waits for the first up to :func:`kgserver.config.lock_timeout`
    seconds, then raises :class:`StoreLocked` naming ``action``.
    """
    with engine.connect() as connection:
        connection.execution_options(sqlite_immediate=True)
        with translated_errors(engine, action):
            transaction = connection.begin()
            if connection.dialect.name == "postgresql":
                timeout_ms = max(1, round(lock_timeout() * 1000))
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
                connection.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (PG_WRITE_LOCK,))
                connection.exec_driver_sql("SET LOCAL lock_timeout TO DEFAULT")
        with transaction:
            yield connection


def _is_lock_timeout(error: DBAPIError) -> bool:
    orig = error.orig
    return (
        getattr(orig, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
        or getattr(orig, "sqlstate", None) == _PG_LOCK_NOT_AVAILABLE
    )


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        # The path SQLite will open, as given (SQLite does not expand "~" either).
        directory = Path(database).parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            redacted_url = make_url(url).render_as_string(hide_password=True)
            raise StoreUnavailable(
                redacted_url, f"cannot create the directory {directory}: {error.strerror or error}"
            ) from error
    engine = create_engine(url)
    busy_timeout_ms = round(lock_timeout() * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below)
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout={busy_timeout_ms}"):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
