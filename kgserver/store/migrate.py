"""Alembic, driven from Python: locate the migrations, upgrade, check a schema.

The Alembic configuration is built in code (no ``alembic.ini`` lookup relative
to the working directory), so ``kgserver db upgrade`` works from any directory,
from a source checkout with an editable install, and from an installed wheel
that ships the migrations as the ``kgserver_migrations`` package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from kgserver.errors import ConfigurationError, SchemaOutOfDate
from kgserver.store.engine import redact

MIGRATIONS_PACKAGE = "kgserver_migrations"


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``.

    An installed ``kgserver_migrations`` package wins; otherwise the source tree's
    ``migrations/`` next to the ``kgserver`` package (checkout or editable install).
    """
    spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    source_tree = Path(__file__).resolve().parents[2] / "migrations"
    if (source_tree / "env.py").is_file():
        return source_tree
    raise ConfigurationError(
        f"kgserver's database migrations are missing: neither the {MIGRATIONS_PACKAGE!r} "
        f"package is installed nor {source_tree} exists; reinstall kgserver"
    )


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the migrations, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    """The revisions this kgserver's schema is at when fully upgraded."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    """The revisions recorded in the database (empty for a database never upgraded)."""
    return set(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: Engine, revision: str = "head") -> set[str]:
    """Apply the migrations up to ``revision``; returns the revisions now current."""
    _refuse_unknown(engine)
    with engine.connect() as connection:
        # On SQLite take the write lock first: two processes opening a fresh file
        # at once then upgrade one after the other instead of failing.
        connection.execution_options(sqlite_immediate=True)
        command.upgrade(alembic_config(connection), revision)
        connection.commit()
    with engine.connect() as connection:
        return current_revisions(connection)


def is_current(engine: Engine) -> bool:
    """Whether the schema is exactly at head (raises if it is newer than this kgserver)."""
    current = _refuse_unknown(engine)
    return current == head_revisions()


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the schema is at head."""
    if not is_current(engine):
        url = redact(engine.url.render_as_string(hide_password=False))
        raise SchemaOutOfDate(
            f"the database {url} is not at the current kgserver schema; "
            f"run `kgserver db upgrade --db {url}` first"
        )


def _refuse_unknown(engine: Engine) -> set[str]:
    """The current revisions, after checking that this kgserver knows all of them."""
    with engine.connect() as connection:
        current = current_revisions(connection)
    script = ScriptDirectory.from_config(alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = current - known
    if unknown:
        raise SchemaOutOfDate(
            f"the database {redact(engine.url.render_as_string(hide_password=False))} is at "
            f"schema revision {', '.join(sorted(unknown))}, which this kgserver does not know; "
            "it was upgraded by a newer kgserver"
        )
    return current
