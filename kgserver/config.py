"""Where kgserver keeps its data and which database it talks to.

Two settings, both resolvable without importing anything heavy:

* ``KGSERVER_HOME``: the data directory (default ``./.kgserver/``, relative to the
  working directory so that a checkout's demo keeps its state next to it).
* the database URL: an explicit ``--db URL`` wins, then ``KGSERVER_DATABASE_URL``,
  then an embedded SQLite file ``$KGSERVER_HOME/kgserver.db``.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "KGSERVER_HOME"
DATABASE_URL_ENV = "KGSERVER_DATABASE_URL"
DEFAULT_HOME = ".kgserver"
DATABASE_FILE = "kgserver.db"


def home() -> Path:
    """The data directory, absolute; it is not created here (the store does that on write)."""
    configured = os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(configured).expanduser().resolve()


def default_database_url() -> str:
    """The embedded SQLite database under :func:`home`."""
    return f"sqlite:///{home() / DATABASE_FILE}"


def database_url(explicit: str | None = None) -> str:
    """Resolve the database URL: explicit value, then the environment, then the default."""
    if explicit:
        return explicit
    from_env = os.environ.get(DATABASE_URL_ENV)
    if from_env:
        return from_env
    return default_database_url()
