"""Which MLflow store kgserver talks to, and whether it is there.

The embedded default is an MLflow SQLite store ``$KGSERVER_HOME/mlflow.db`` with run
artifacts under ``$KGSERVER_HOME/mlartifacts``. An explicit ``--tracking-uri`` or
``MLFLOW_TRACKING_URI`` is used exactly as given, for the tracking store and the model
registry alike, so any MLflow URI works (``sqlite:///...``, ``postgresql://...``,
``http://host:port``).

:func:`connect` checks reachability with a short timeout and no retries before
anything is trained: MLflow's own HTTP defaults retry with backoff for minutes, and a
database URI would be retried ten times by MLflow's engine factory.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from kgserver.config import home
from kgserver.errors import TrackingUnavailable

if TYPE_CHECKING:
    from mlflow import MlflowClient

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EMBEDDED_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
CHECK_TIMEOUT_SECONDS = 15  # a refused connection fails at once; this bounds a hung server
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

# kgserver does not report usage to MLflow's telemetry service on a user's behalf, and
# its downloads are small: MLflow stays quiet unless the user set these otherwise.
MLFLOW_SETTINGS = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}

_env_lock = threading.Lock()


def configure_mlflow() -> None:
    """Apply kgserver's MLflow settings (``MLFLOW_SETTINGS``) where the user has not set them.

    MLflow reads them from the environment, telemetry once when ``mlflow`` is first
    imported, so every kgserver path into MLflow calls this before importing it:
    :func:`client_for`, :func:`~kgserver.tracking.refs.registry_errors` and ``kgserver ui``.
    """
    for key, value in MLFLOW_SETTINGS.items():
        os.environ.setdefault(key, value)


def embedded_tracking_uri() -> str:
    """The MLflow SQLite store under ``$KGSERVER_HOME``."""
    return f"sqlite:///{home() / EMBEDDED_DB}"


def embedded_artifact_root() -> Path:
    """Where the embedded store keeps run and model artifacts."""
    return home() / ARTIFACT_DIR


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the embedded store."""
    return explicit or os.environ.get(TRACKING_URI_ENV) or embedded_tracking_uri()


def is_embedded(uri: str) -> bool:
    """Whether ``uri`` is the embedded default (whose artifacts kgserver places)."""
    return uri == embedded_tracking_uri()


def connect(tracking_uri: str | None = None) -> MlflowClient:
    """A client for the resolved store, after checking that the store answers."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    return client_for(uri)


@lru_cache(maxsize=16)
def client_for(uri: str) -> MlflowClient:
    """One client per URI (MLflow builds a store per client; serving polls often)."""
    configure_mlflow()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def check_reachable(uri: str) -> None:
    """Raise :class:`TrackingUnavailable` within seconds if the store does not answer."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in DATABASE_SCHEMES:
        _check_database(uri, scheme)
    try:
        with fail_fast(), _first_use_lock(uri, scheme):
            client_for(uri).search_experiments(max_results=1)
    except Exception as error:  # any failure here means: not usable as a tracking store
        raise TrackingUnavailable(_unavailable(uri, error)) from error


@contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow HTTP calls inside this block time out quickly and are not retried.

    MLflow reads these settings from the environment on every request, so they are
    set for the block only (under a lock, since the environment is process-wide).
    """
    settings = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_SECONDS),
    }
    with _env_lock:
        saved = {key: os.environ.get(key) for key in settings}
        os.environ.update(settings)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@contextmanager
def _first_use_lock(uri: str, scheme: str) -> Iterator[None]:
    """Let processes that open a SQLite store take turns.

    The first use of a new store creates MLflow's tables; two processes doing that
    at once (two ``kgserver train`` started together on a fresh home) race, and
    one fails with "table ... already exists". An advisory lock beside the file
    makes the second wait until the first has created them.
    """
    path = _sqlite_file(uri, scheme)
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_file(uri: str, scheme: str) -> Path | None:
    """The database file of a SQLite URI (None for other schemes and in-memory databases)."""
    path = uri.split(":///", 1)[-1] if scheme == "sqlite" else ""
    return Path(path) if path and path != ":memory:" else None


def _check_database(uri: str, scheme: str) -> None:
    """Connect once with a timeout; MLflow's own engine factory retries for ~100 s."""
    import sqlalchemy

    path = _sqlite_file(uri, scheme)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"connect_timeout": CHECK_TIMEOUT_SECONDS} if scheme in {"postgresql", "mysql"} else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as error:  # driver missing, refused, bad credentials: all "unavailable"
        raise TrackingUnavailable(_unavailable(uri, error)) from error


def _unavailable(uri: str, error: BaseException) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"MLflow tracking at {uri} is not reachable ({reason}). Start the tracking server, "
        "pass another --tracking-uri (or MLFLOW_TRACKING_URI), or train with --no-tracking."
    )
