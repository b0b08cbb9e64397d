"""Load a trained model by reference: ``kgserver.models.load("codex-compgcn@champion")``.

References are ``NAME@ALIAS`` and ``NAME/VERSION`` (MLflow Model Registry),
``runs:/RUN_ID/model`` (a tracked run's model) or the path of a bundle directory
(``kgserver train --no-tracking`` output). The registry is the one at
``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else kgserver's embedded store.

Loading never unpickles: the bundle is JSON, safetensors and text, and anything
else in it is refused (:class:`~kgserver.errors.UnsafeArtifact`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from kgserver.tracking.bundle import LoadedModel, load_bundle
from kgserver.tracking.refs import fetch_bundle, parse_ref
from kgserver.tracking.refs import resolve as _resolve

__all__ = ["LoadedModel", "load", "resolve"]


def resolve(ref: str, tracking_uri: str | None = None) -> str:
    """The version ``ref`` names right now: ``"codex-compgcn/3"``, a ``runs:/`` URI, or a
    bundle directory's absolute path; ``load(resolve(ref))`` loads exactly that.

    Cheap (one registry look-up, no download, no retries): a server polls it to learn
    whether an alias has moved. Unknown names, aliases and versions raise
    :class:`~kgserver.errors.ModelNotFound`.
    """
    return _resolve(ref, tracking_uri)


def load(ref: str, tracking_uri: str | None = None) -> LoadedModel:
    """Rebuild the model ``ref`` names, in eval mode, with ``version`` set to what was loaded."""
    version = _resolve(ref, tracking_uri)
    if parse_ref(version).kind == "local":
        return load_bundle(Path(version), version=version)
    with tempfile.TemporaryDirectory(prefix="kgserver-model-") as scratch:
        bundle = fetch_bundle(version, Path(scratch), tracking_uri)
        return load_bundle(bundle, version=version)
