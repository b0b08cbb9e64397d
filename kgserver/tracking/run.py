"""One training = one MLflow run, ending in a registered model version.

The ``kgserver train`` command drives it like this::

    run = TrainingRun.start(model, snapshot, train_config, tracking_uri=..., register_as=...)
    with run:                                   # FAILED in MLflow if training raises
        result = train(model, snapshot, train_config, observer=run)
        run.finish(result)                      # metrics, artifacts, registered version
    print(run.registered_version)               # e.g. "codex-compgcn/3"

:meth:`TrainingRun.start` checks the registered model name and that the tracking store
answers before it returns, so a bad name or a down server fails the command before the
first epoch. A store that stops accepting writes later is one
:class:`~kgserver.errors.TrackingUnavailable`; the run is then ended as FAILED if the
store takes that write, and the error says so if it does not. Without tracking,
:func:`save_untracked` writes the same bundle under ``$KGSERVER_HOME/models``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import kgserver
from kgserver.config import home
from kgserver.errors import TrackingUnavailable
from kgserver.graph.snapshot import Snapshot
from kgserver.registry import KGModel
from kgserver.tracking.backend import (
    connect,
    embedded_artifact_root,
    fail_fast,
    is_embedded,
    resolve_tracking_uri,
)
from kgserver.tracking.bundle import CONFIG, save_bundle
from kgserver.tracking.curves import plot_training_curves
from kgserver.tracking.pyfunc import save_pyfunc
from kgserver.tracking.refs import MODEL_ARTIFACT, check_model_name

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CURVES_ARTIFACT = "training_curves.png"
TRAIN_PREFIX = "train."  # the run config's parameters
AUTO_PREFIX = "auto."  # the reason a parameter was chosen by the graph's size
UNTRACKED_DIR = "models"

T = TypeVar("T")


def registered_model_name(register_as: str | None, graph: str, model_type: str) -> str:
    """``--register-as``, else ``GRAPH-MODEL``, checked (:func:`~kgserver.tracking.refs.check_model_name`)
    so that a name the registry or ``NAME@ALIAS`` cannot hold fails before training, naming the option."""
    if register_as is not None:
        return check_model_name(register_as, "--register-as")
    return check_model_name(f"{graph}-{model_type}", "--register-as (default GRAPH-MODEL)")


class TrainingRun:
    """An open MLflow run for one training; the training loop's epoch observer."""

    def __init__(
        self,
        client: MlflowClient,
        tracking_uri: str,
        experiment_id: str,
        run_id: str,
        model_type: str,
        snapshot: Snapshot,
        register_as: str,
    ) -> None:
        self.client = client
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.model_type = model_type
        self.snapshot = snapshot
        self.register_as = register_as
        self.registered_version: str | None = None
        self.model_id: str | None = None

    @classmethod
    def start(
        cls,
        model: KGModel,
        snapshot: Snapshot,
        train_config: Any = None,
        *,
        tracking_uri: str | None = None,
        register_as: str | None = None,
        run_name: str | None = None,
        automatic: Mapping[str, str] | None = None,
        automatic_train: Mapping[str, str] | None = None,
    ) -> TrainingRun:
        """Open a run in the experiment named after the graph; log parameters and tags.

        The parameters are the model's hyperparameters and, prefixed ``train.``, the
        run's config. ``automatic`` and ``automatic_train`` name those of each that were
        chosen by the graph's size (not given by the user), with the reason: each is
        logged as ``auto.NAME`` (``auto.train.NAME``) beside the value itself.

        Raises :class:`~kgserver.errors.ConfigurationError` for a registered model name
        the registry cannot hold and :class:`~kgserver.errors.TrackingUnavailable` within
        seconds if the tracking store does not answer.
        """
        import dgl
        import torch

        model_type = type(model).name
        name = registered_model_name(register_as, snapshot.name, model_type)
        uri = resolve_tracking_uri(tracking_uri)
        client = connect(uri)
        from mlflow.entities import Param
        experiment_id = _experiment_id(client, uri, snapshot.name)
        tags = {
            **_graph_tags(snapshot),
            "model_type": model_type,
            "kgserver.version": kgserver.__version__,
            "torch.version": torch.__version__,
            "dgl.version": dgl.__version__,
        }
        # MLflow's random run names come from the seeded ``random`` module, so runs started
        # with the same seed would share one; name them after the model and the time instead
        run_name = run_name or f"{model_type}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        params = {"model_type": model_type, **model.hparams.to_dict()}
        params.update({f"{TRAIN_PREFIX}{key}": value for key, value in _as_dict(train_config).items()})
        chosen = {**(automatic or {}), **{f"{TRAIN_PREFIX}{key}": why for key, why in (automatic_train or {}).items()}}
        unknown = sorted(set(chosen) - set(params))
        if unknown:
            raise ValueError(f"automatic choices {', '.join(unknown)} are not parameters of the run")
        params.update({f"{AUTO_PREFIX}{key}": why for key, why in chosen.items()})
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        try:
            client.log_batch(run.info.run_id, params=[Param(key, _param_value(value)) for key, value in params.items()])
        except BaseException:
            client.set_terminated(run.info.run_id, status="FAILED")
            raise
        return cls(
            client,
            uri,
            experiment_id,
            run.info.run_id,
            model_type,
            snapshot,
            name,
        )

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's loss and validation metrics at step ``epoch``."""
        self._log_metrics(metrics, step=epoch)

    def _write(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One MLflow write; a store that refuses it is a :class:`TrackingUnavailable`."""
        with self._store_errors():
            return call(*args, **kwargs)

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with _store_tracebacks_muted():
                yield
        except (MlflowException, SQLAlchemyError, OSError) as error:
            raise TrackingUnavailable(
                f"MLflow tracking at {self.tracking_uri} stopped accepting writes during run {self.run_id} "
                f"({_first_line(error)}); nothing was registered"
            ) from error

    def finish(self, result: Any) -> str:
        """Log final metrics, curves, config and model; register the model version.

        ``result`` is a training result with ``model`` (best checkpoint), ``metrics``
        (flat ``test_*``/``valid_*`` keys) and ``history`` (per-epoch dicts); its
        ``best_epoch``, ``mode`` and ``stop_reason``, where it has them, become
        ``training.*`` tags. Returns the registered ``NAME/VERSION``.
        """
        from mlflow.entities import RunTag

        metrics = dict(result.metrics)
        if "test_mrr" not in metrics:
            raise ValueError("the training result has no test_mrr; nothing to register a version by")
        history = list(result.history)
        last_epoch = max((int(row["epoch"]) for row in history), default=0)
        outcome = {
            f"training.{key}": str(getattr(result, key))
            for key in ("best_epoch", "mode", "stop_reason")
            if getattr(result, key, None) is not None
        }
        if outcome:
            self._write(self.client.log_batch, self.run_id, tags=[RunTag(key, value) for key, value in outcome.items()])
        logged = self._write(
            self.client.create_logged_model,
            self.experiment_id,
            name=MODEL_ARTIFACT,
            source_run_id=self.run_id,
            params={key: _param_value(value) for key, value in result.model.hparams.to_dict().items()},
            model_type=self.model_type,
        )
        self.model_id = logged.model_id
        try:
            self._log_metrics(metrics, step=last_epoch, model_id=logged.model_id)
            with tempfile.TemporaryDirectory(prefix="kgserver-run-") as scratch:
                work = Path(scratch)
                bundle = save_bundle(work / "bundle", result.model, self.snapshot)
                self._write(self.client.log_artifact, self.run_id, str(bundle / CONFIG))
                curves = plot_training_curves(
                    history, work / CURVES_ARTIFACT, f"{self.register_as} on {self.snapshot.name}"
                )
                self._write(self.client.log_artifact, self.run_id, str(curves))
                model_dir = save_pyfunc(work / MODEL_ARTIFACT, bundle, result.model)
                self._write(self.client.log_model_artifacts, logged.model_id, str(model_dir))
            self._write(self.client.finalize_logged_model, logged.model_id, "READY")
        except BaseException:
            self._end_quietly(self.client.finalize_logged_model, logged.model_id, "FAILED")
            raise
        with self._store_errors():
            version = self._register(metrics["test_mrr"], logged.artifact_location)
        self.registered_version = f"{self.register_as}/{version}"
        return self.registered_version

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        """End the run FINISHED, KILLED (interrupted) or FAILED, as far as the store allows.

        A store that refuses this last write never hides the error that ended the
        training: when that error was the store's too, the one error says the run
        stays RUNNING; otherwise a warning does.
        """
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        refusal = self._end_quietly(self.client.set_terminated, self.run_id, status=status)
        if refusal is None:
            return
        left = f"MLflow run {self.run_id} could not be marked {status} and stays RUNNING ({refusal})"
        if error is None:
            raise TrackingUnavailable(f"training finished but {left}")
        if isinstance(error, TrackingUnavailable):
            raise TrackingUnavailable(f"{error}; {left}") from error
        log.warning("%s", left)

    def _end_quietly(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
        """Make a closing write; return why the store refused it (None: it was written)."""
        try:
            with fail_fast(), _store_tracebacks_muted():
                call(*args, **kwargs)
        except Exception as refusal:  # the caller reports it; the error that ended the run comes first
            return _first_line(refusal)
        return None

    def _log_metrics(self, metrics: Mapping[str, Any], step: int, model_id: str | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step, model_id=model_id)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if batch:
            self._write(self.client.log_batch, self.run_id, metrics=batch)

    def _register(self, test_mrr: float, source: str) -> str:
        """Create the model version from the logged model's artifacts.

        ``source`` is the artifact location itself, not ``models:/<model id>``: MLflow's
        SQL registry resolves the latter through the process-global tracking URI, which
        is not the store this client writes to.
        """
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.register_as)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            self.client.create_registered_model(
                self.register_as,
                description=f"{self.model_type} link predictor for graph {self.snapshot.name!r} (kgserver)",
            )
        version = self.client.create_model_version(
            self.register_as,
            source=source,
            run_id=self.run_id,
            tags={"graph": self.snapshot.name, "model_type": self.model_type, "test_mrr": f"{test_mrr:.6f}"},
            model_id=self.model_id,
        )
        return str(version.version)


def save_untracked(model: KGModel, snapshot: Snapshot, name: str) -> Path:
    """Save a bundle under ``$KGSERVER_HOME/models/NAME/<UTC time>`` (for ``--no-tracking``)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    parent = home() / UNTRACKED_DIR / _slug(name)
    target = parent / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = parent / f"{stamp}-{suffix}"
    return save_bundle(target, model, snapshot)


def _experiment_id(client: MlflowClient, uri: str, name: str) -> str:
    """The experiment named after the graph, created on first use.

    On the embedded store kgserver places artifacts under ``$KGSERVER_HOME/mlartifacts``
    (MLflow's own default would be ``./mlruns`` of whatever directory the command ran in).
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            log.warning("restoring deleted MLflow experiment %r to record this run", name)
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    location = (embedded_artifact_root() / _slug(name)).as_uri() if is_embedded(uri) else None
    return client.create_experiment(name, artifact_location=location)


def _graph_tags(snapshot: Snapshot) -> dict[str, str]:
    """The snapshot's fingerprint (name, sizes per split, content hash) as run tags."""
    fingerprint = snapshot.fingerprint()
    tags = {"graph": str(fingerprint["name"])}
    tags.update({f"graph.{key}": str(value) for key, value in fingerprint.items() if key != "name"})
    return tags


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    return dict(config)


def _param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# MLflow's SQL store logs a traceback for each database error before raising it; the
# raised error, translated once, is what kgserver reports.
_MLFLOW_STORE_LOGGER = "mlflow.store.db.utils"


@contextmanager
def _store_tracebacks_muted() -> Iterator[None]:
    """Drop MLflow's logged tracebacks of store errors for the block (the errors still raise)."""
    logger = logging.getLogger(_MLFLOW_STORE_LOGGER)
    logger.addFilter(_without_traceback)
    try:
        yield
    finally:
        logger.removeFilter(_without_traceback)


def _without_traceback(record: logging.LogRecord) -> bool:
    return record.exc_info is None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _slug(name: str) -> str:
    """A directory name for a graph or model name (which may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"
