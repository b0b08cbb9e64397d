"""SQLAlchemy engines for the two supported backends, configured for bulk work.

SQLite gets WAL (readers never block the one writer), ``synchronous=NORMAL``
(durable at checkpoints, safe against corruption), a larger page cache, foreign
keys on, and a busy timeout so that a second writer waits instead of failing.
pysqlite's implicit transactions are switched off and SQLAlchemy emits ``BEGIN``
itself, so a transaction really covers every statement of an import; a connection
with the execution option ``sqlite_immediate=True`` begins with ``BEGIN
IMMEDIATE``, taking the write lock up front (a deferred transaction that reads
first and writes later can fail with SQLITE_BUSY instead of waiting).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from kgserver.errors import ConfigurationError

SQLITE_PRAGMAS = (
    "PRAGMA page_size=8192",  # takes effect when a new file is created; ~10% faster bulk inserts
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=60000",
    "PRAGMA cache_size=-131072",  # 128 MiB
    "PRAGMA temp_store=MEMORY",
    "PRAGMA mmap_size=268435456",
)


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


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (below)
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
