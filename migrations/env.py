"""Alembic environment of the kgserver store.

``kgserver db upgrade`` (kgserver.store.migrate) passes an open connection in
``config.attributes["connection"]``. Run from the ``alembic`` command line
(``alembic -c migrations/alembic.ini ...``, for writing new revisions), the URL is
``sqlalchemy.url`` from the ini file if set, else kgserver's own resolution
(``KGSERVER_DATABASE_URL``, then the SQLite file under ``KGSERVER_HOME``).
"""

from __future__ import annotations

from alembic import context

from kgserver.config import database_url
from kgserver.store.engine import make_engine
from kgserver.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode recreates tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on one opened from the URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or database_url())
    try:
        with engine.connect() as opened:
            _run(opened)
            opened.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("kgserver migrations run online only (they need a database connection)")
run_migrations_online()
