"""Where kgserver keeps its data, which database it talks to, and what it accepts as
a graph name; all resolvable without importing anything heavy.

* ``KGSERVER_HOME``: the data directory (default ``./.kgserver/``, relative to the
  working directory so that a checkout's demo keeps its state next to it).
* the database URL: an explicit ``--db URL`` wins, then ``KGSERVER_DATABASE_URL``,
  then an embedded SQLite file ``$KGSERVER_HOME/kgserver.db``.
* ``KGSERVER_LOCK_TIMEOUT``: how long a writer waits for another one's lock.
* :data:`GRAPH_NAME_PATTERN`: the names a graph can be created under.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

from kgserver.errors import ConfigurationError

HOME_ENV = "KGSERVER_HOME"
DATABASE_URL_ENV = "KGSERVER_DATABASE_URL"
LOCK_TIMEOUT_ENV = "KGSERVER_LOCK_TIMEOUT"
DEFAULT_HOME = ".kgserver"
DATABASE_FILE = "kgserver.db"

DEFAULT_LOCK_TIMEOUT = 10.0
"""Seconds a writer (import, graph deletion, SQLite schema upgrade) waits for the
store's write lock, held by another writer, before giving up with
:class:`~kgserver.errors.StoreLocked`. Long enough to ride out a short write, short
enough that a second import does not appear to hang behind a long one."""

GRAPH_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a graph name must match in full: 1 to 64 ASCII letters, digits, ``.``, ``_``
and ``-``, starting with a letter or digit.

A graph name travels further than the store: it is part of the registered model
name (``GRAPH-MODEL``, referenced as ``NAME@ALIAS`` or ``NAME/VERSION``), of file
names and of URLs. These characters are safe in all of them; ``/``, ``@``, ``:``,
spaces and unbounded lengths are not. Checked when a graph is created by
``kgserver import``, before anything is written."""

GRAPH_NAME_RULE = "1-64 characters: letters, digits, '.', '_' and '-', starting with a letter or digit"
""":data:`GRAPH_NAME_PATTERN` in words, for help texts and error messages."""


def check_graph_name(name: str) -> str:
    """``name`` if it matches :data:`GRAPH_NAME_PATTERN`, else a ConfigurationError
    that quotes it (shortened) and states the rule."""
    if GRAPH_NAME_PATTERN.fullmatch(name):
        return name
    shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
    raise ConfigurationError(f"invalid graph name {shown!r} (--graph): use {GRAPH_NAME_RULE}")


def lock_timeout() -> float:
    """Seconds to wait for another writer's lock: ``KGSERVER_LOCK_TIMEOUT``, else
    :data:`DEFAULT_LOCK_TIMEOUT`."""
    configured = os.environ.get(LOCK_TIMEOUT_ENV)
    if not configured:
        return DEFAULT_LOCK_TIMEOUT
    try:
        seconds = float(configured)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigurationError(
            f"{LOCK_TIMEOUT_ENV}={configured!r} is not a number of seconds (0 or more)"
        )
    return seconds


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
