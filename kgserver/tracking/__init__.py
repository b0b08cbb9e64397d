"""MLflow tracking and the model bundle: every training a run, every model a version.

* :mod:`~kgserver.tracking.bundle`: the pickle-free model bundle (save/load).
* :mod:`~kgserver.tracking.backend`: which MLflow store, and whether it answers.
* :mod:`~kgserver.tracking.run`: :class:`TrainingRun`, the training observer that
  logs a run and registers a version; :func:`save_untracked` for ``--no-tracking``.
* :mod:`~kgserver.tracking.refs`: ``NAME@ALIAS`` / ``NAME/VERSION`` / ``runs:/`` references.
* :mod:`~kgserver.tracking.catalog`: what the ``kgserver models`` commands show.
* :mod:`~kgserver.tracking.pyfunc`: the MLflow pyfunc flavor over a bundle.
"""

from kgserver.tracking.backend import TRACKING_URI_ENV, embedded_tracking_uri, resolve_tracking_uri
from kgserver.tracking.bundle import LoadedModel, load_bundle, save_bundle
from kgserver.tracking.run import TrainingRun, save_untracked

__all__ = [
    "TRACKING_URI_ENV",
    "LoadedModel",
    "TrainingRun",
    "embedded_tracking_uri",
    "load_bundle",
    "resolve_tracking_uri",
    "save_bundle",
    "save_untracked",
]
