"""Model references: ``NAME@ALIAS``, ``NAME/VERSION``, ``runs:/RUN_ID/model`` or a bundle path.

:func:`resolve` turns a reference into the concrete version it means right now
(``"codex-compgcn/3"``), cheaply, so a server can poll it to see whether an alias moved.
:func:`fetch_bundle` downloads exactly that version's bundle; the two are separate so
a loader resolves first and then downloads the version it resolved, never a version
an alias was moved to in between.

Names and aliases are checked before they are written (:func:`check_model_name`,
:func:`check_alias`) against what both the MLflow registry and this reference syntax
accept: a registered model name is letters, digits, ``_``, ``.`` and ``-``, starting
with a letter, digit or ``_``, at most 256 characters (no ``@``, ``/`` or ``:``, which
would make ``NAME@ALIAS`` and ``NAME/VERSION`` ambiguous or which MLflow refuses); an
alias is letters, digits, ``_`` and ``-``, at most 255 characters, and neither
``latest`` nor ``v`` followed by digits (MLflow reserves those).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from kgserver.errors import ConfigurationError, ModelNotFound, TrackingUnavailable
from kgserver.tracking.backend import client_for, configure_mlflow, fail_fast, resolve_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

MODEL_ARTIFACT = "model"  # the run's logged model (MLflow pyfunc flavor)
BUNDLE_SUBPATH = "data/bundle"  # where the bundle sits inside that model's artifacts

_ALIAS = re.compile(r"^(?P<name>[^@/]+)@(?P<alias>[^@/]+)$")
_VERSION = re.compile(r"^(?P<name>[^@/]+)/(?P<version>[0-9]+)$")
_RUN = re.compile(r"^runs:/(?P<run_id>[^/]+)(?:/(?P<path>.+?))?/?$")
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
MODEL_NAME = re.compile(r"^\w[\w.-]{0,255}$")
ALIAS = re.compile(r"^[\w-]{1,255}$")
_RESERVED_ALIAS = re.compile(r"^(latest|[vV][0-9]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference; ``kind`` says which of the fields are set."""

    kind: Literal["alias", "version", "run", "local"]
    text: str
    name: str = ""
    alias: str = ""
    version: str = ""
    run_id: str = ""
    path: str = ""


def parse_ref(ref: str) -> ModelRef:
    """Parse a reference; a string that is none of the registry forms is a bundle path."""
    text = ref.strip()
    if text.startswith("models:/"):
        text = text[len("models:/"):]
    if match := _RUN.match(text):
        return ModelRef("run", text, run_id=match["run_id"], path=match["path"] or MODEL_ARTIFACT)
    if match := _ALIAS.match(text):
        return ModelRef("alias", text, name=match["name"], alias=match["alias"])
    if match := _VERSION.match(text):
        return ModelRef("version", text, name=match["name"], version=match["version"])
    if not text:
        raise ModelNotFound("empty model reference; use NAME@ALIAS, NAME/VERSION, runs:/RUN_ID/model or a bundle path")
    return ModelRef("local", text, path=text)


def check_model_name(name: str, label: str = "registered model name") -> str:
    """``name`` if the registry and ``NAME@ALIAS``/``NAME/VERSION`` can both hold it, else
    :class:`~kgserver.errors.ConfigurationError` naming ``label`` (the option it came from)."""
    if not MODEL_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{label} {name!r} cannot name a registered model: use letters, digits, '_', '.' and '-' "
            "(starting with a letter, digit or '_', at most 256 characters) so that NAME@ALIAS and "
            "NAME/VERSION stay unambiguous"
        )
    return name


def check_alias(alias: str, label: str = "alias") -> str:
    """``alias`` if MLflow accepts it as a registered model alias, else a
    :class:`~kgserver.errors.ConfigurationError` naming ``label``."""
    if not ALIAS.fullmatch(alias):
        raise ConfigurationError(
            f"{label} {alias!r} is not a valid alias: use letters, digits, '_' and '-' (at most 255 characters)"
        )
    if _RESERVED_ALIAS.fullmatch(alias):
        raise ConfigurationError(f"{label} {alias!r} is reserved by MLflow ('latest' and v<number> name versions)")
    return alias


def resolve(ref: str, tracking_uri: str | None = None) -> str:
    """The concrete version ``ref`` names now: ``NAME/VERSION``, the ``runs:/`` URI, or
    the bundle directory's absolute path (so ``load(resolve(ref))`` always works).

    Raises :class:`ModelNotFound` for an unknown model, alias, version, run or path.
    """
    parsed = parse_ref(ref)
    if parsed.kind == "local":
        path = Path(parsed.path).expanduser()
        if not path.is_dir():
            raise ModelNotFound(f"{parsed.path!r} is neither a registered model reference nor a bundle directory")
        return str(path.resolve())
    client = client_for(resolve_tracking_uri(tracking_uri))
    with registry_errors(ref):
        if parsed.kind == "alias":
            found = client.get_model_version_by_alias(parsed.name, parsed.alias)
            return f"{parsed.name}/{found.version}"
        if parsed.kind == "version":
            client.get_model_version(parsed.name, parsed.version)
            return f"{parsed.name}/{parsed.version}"
        client.get_run(parsed.run_id)
        return f"runs:/{parsed.run_id}/{parsed.path}"


def fetch_bundle(version: str, destination: Path, tracking_uri: str | None = None) -> Path:
    """Download the bundle of a resolved ``NAME/VERSION`` or ``runs:/`` version into ``destination``."""
    uri = resolve_tracking_uri(tracking_uri)
    parsed = parse_ref(version)
    if parsed.kind not in ("version", "run"):
        raise ValueError(f"fetch_bundle needs a resolved registry or run version, got {version!r}")
    destination.mkdir(parents=True, exist_ok=True)
    with registry_errors(version, fast=False):
        if parsed.kind == "version":
            # The version's storage location, not "models:/..." (which MLflow resolves
            # through the process-global registry URI rather than this one).
            location = client_for(uri).get_model_version_download_uri(parsed.name, parsed.version)
            source = f"{location.rstrip('/')}/{BUNDLE_SUBPATH}"
            return Path(_download(source, destination, uri))
        location = _logged_model_location(client_for(uri), parsed.run_id, parsed.path)
        return Path(_download(f"{location.rstrip('/')}/{BUNDLE_SUBPATH}", destination, uri))


def _logged_model_location(client: MlflowClient, run_id: str, name: str) -> str:
    """Artifact location of the model ``name`` logged by run ``run_id``.

    Looked up here rather than through a ``runs:/`` download, which MLflow resolves
    via the process-global tracking URI.
    """
    experiment_id = client.get_run(run_id).info.experiment_id
    quoted = name.replace("'", "\\'")
    token = None
    while True:
        page = client.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"name = '{quoted}'", page_token=token
        )
        for model in page:
            if model.source_run_id == run_id:
                return model.artifact_location
        token = page.token
        if not token:
            raise ModelNotFound(f"run {run_id} logged no model named {name!r}")


def _download(source: str, destination: Path, uri: str) -> str:
    import mlflow

    return mlflow.artifacts.download_artifacts(
        artifact_uri=source, dst_path=str(destination), tracking_uri=uri, registry_uri=uri
    )


@contextmanager
def registry_errors(ref: str, fast: bool = True) -> Iterator[None]:
    """Translate MLflow's exceptions for one reference into kgserver's typed errors.

    ``fast`` (for quick registry look-ups, not downloads) turns off MLflow's HTTP retries
    so a poller learns within seconds that the server is gone.
    """
    configure_mlflow()
    from mlflow.exceptions import MlflowException

    try:
        with fail_fast() if fast else nullcontext():
            yield
    except MlflowException as error:
        message = str(error.message).strip()
        if error.error_code in _NOT_FOUND:
            raise ModelNotFound(f"model {ref!r} not found: {message}") from None
        raise TrackingUnavailable(f"MLflow could not answer for model {ref!r}: {message}") from error
