"""Alembic, driven from Python: locate the migrations, upgrade, check a schema.

The Alembic configuration is built in code (no ``alembic.ini`` lookup relative
to the working directory), so ``kgserver db upgrade`` works from any directory.
The migrations are the ``kgserver_migrations`` package (the source tree's
``migrations/``), in an editable install and in a wheel alike.

Opening a store only needs to know whether the database is at the revision this
code was written for, which one query answers; Alembic itself (a noticeable part
of every command's start-up time) is imported only to upgrade or to explain a
mismatch. ``SCHEMA_REVISION`` must name the newest migration; a test checks it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from kgserver.errors import ConfigurationError, SchemaOutOfDate

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_PACKAGE = "kgserver_migrations"
SCHEMA_REVISION = "0002"
"""The Alembic head revision the models in ``kgserver.store.models`` correspond to."""


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``: the ``kgserver_migrations`` package.

    The source tree's ``migrations/`` is that package (``pyproject.toml`` maps it), in
    a wheel and in an editable install alike.
    """
    spec = importlib.util.find_spec(MIGRATIONS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"kgserver's database migrations are missing: the {MIGRATIONS_PACKAGE!r} package "
            "is not installed; reinstall kgserver"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the migrations, optionally bound to a connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revisions() -> set[str]:
    """The revisions Alembic's scripts end in (what ``upgrade`` brings a database to)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(engine: Engine) -> set[str]:
    """The revisions recorded in the database (empty for a database never upgraded)."""
    with engine.connect() as connection:
        try:
            rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except DBAPIError:  # no alembic_version table: nothing was ever applied
            return set()
    return {row[0] for row in rows}


def upgrade(engine: Engine, revision: str = "head") -> set[str]:
    """Apply the migrations up to ``revision``; returns the revisions now current."""
    from alembic import command

    _refuse_unknown(engine, current_revisions(engine))
    with engine.connect() as connection:
        # On SQLite take the write lock first: two processes opening a fresh file
        # at once then upgrade one after the other instead of failing.
        connection.execution_options(sqlite_immediate=True)
        command.upgrade(alembic_config(connection), revision)
        connection.commit()
    return current_revisions(engine)


def is_current(engine: Engine) -> bool:
    """Whether the schema is at this kgserver's revision (raises if it is newer)."""
    current = current_revisions(engine)
    if current == {SCHEMA_REVISION}:
        return True
    _refuse_unknown(engine, current)
    return False


def require_current(engine: Engine) -> None:
    """Raise :class:`SchemaOutOfDate` unless the schema is at this kgserver's revision."""
    if not is_current(engine):
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaOutOfDate(
            f"the database {url} is not at the current kgserver schema; "
            f"run `kgserver db upgrade --db {url}` first"
        )


def _refuse_unknown(engine: Engine, current: set[str]) -> None:
    """Raise if the database is at a revision this kgserver's migrations do not contain."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = current - known
    if unknown:
        raise SchemaOutOfDate(
            f"the database {engine.url.render_as_string(hide_password=True)} is at schema "
            f"revision {', '.join(sorted(unknown))}, which this kgserver does not know; "
            "it was upgraded by a newer kgserver"
        )
