"""One training = one MLflow run, ending in a registered model version.

The ``kgserver train`` command drives it like this::

    run = TrainingRun.start(model, snapshot, train_config, tracking_uri=..., register_as=...)
    with run:                                   # FAILED in MLflow if training raises
        result = train(model, snapshot, train_config, observer=run)
        run.finish(result)                      # metrics, artifacts, registered version
    print(run.registered_version)               # e.g. "codex-compgcn/3"

:meth:`TrainingRun.start` checks that the tracking store answers before it returns,
so a down server fails the command before the first epoch. Without tracking,
:func:`save_untracked` writes the same bundle under ``$KGSERVER_HOME/models``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import re
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import kgserver
from kgserver.config import home
from kgserver.graph.snapshot import Snapshot
from kgserver.registry import KGModel
from kgserver.tracking.backend import connect, embedded_artifact_root, is_embedded, resolve_tracking_uri
from kgserver.tracking.bundle import CONFIG, save_bundle
from kgserver.tracking.curves import plot_training_curves
from kgserver.tracking.refs import BUNDLE_SUBPATH, MODEL_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CURVES_ARTIFACT = "training_curves.png"
UNTRACKED_DIR = "models"
VERSION_TAGS = ("graph", "model_type", "test_mrr")


class TrainingRun:
    """An open MLflow run for one training; the training loop's epoch observer."""

    def __init__(
        self,
        client: "MlflowClient",
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
    ) -> "TrainingRun":
        """Open a run in the experiment named after the graph; log parameters and tags.

        Raises :class:`~kgserver.errors.TrackingUnavailable` within seconds if the
        tracking store does not answer.
        """
        import dgl
        import torch
        from mlflow.entities import Param

        uri = resolve_tracking_uri(tracking_uri)
        client = connect(uri)
        model_type = type(model).name
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
        run_name = run_name or f"{model_type}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
        run = client.create_run(experiment_id, run_name=run_name, tags=tags)
        params = {"model_type": model_type, **model.hparams.to_dict()}
        params.update({f"train.{key}": value for key, value in _as_dict(train_config).items()})
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
            register_as or f"{snapshot.name}-{model_type}",
        )

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch's loss and validation metrics at step ``epoch``."""
        self._log_metrics(metrics, step=epoch)

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
            self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in outcome.items()])
        logged = self.client.create_logged_model(
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
                self.client.log_artifact(self.run_id, str(bundle / CONFIG))
                curves = plot_training_curves(
                    history, work / CURVES_ARTIFACT, f"{self.register_as} on {self.snapshot.name}"
                )
                self.client.log_artifact(self.run_id, str(curves))
                model_dir = _save_pyfunc(work / MODEL_ARTIFACT, bundle, result.model)
                self.client.log_model_artifacts(logged.model_id, str(model_dir))
            self.client.finalize_logged_model(logged.model_id, "READY")
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, "FAILED")
            raise
        version = self._register(metrics["test_mrr"], logged.artifact_location)
        self.registered_version = f"{self.register_as}/{version}"
        return self.registered_version

    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: object) -> None:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self.client.set_terminated(self.run_id, status=status)

    def _log_metrics(self, metrics: Mapping[str, Any], step: int, model_id: str | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, step, model_id=model_id)
            for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    parent = home() / UNTRACKED_DIR / _slug(name)
    target = parent / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = parent / f"{stamp}-{suffix}"
    return save_bundle(target, model, snapshot)


def _save_pyfunc(path: Path, bundle: Path, model: KGModel) -> Path:
    """Write the MLflow pyfunc model (loader-module flavor) whose data is the bundle."""
    import mlflow

    from kgserver.tracking import pyfunc

    with warnings.catch_warnings():
        # MLflow asks for an input example; the explicit signature documents the input instead.
        warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
        mlflow.pyfunc.save_model(
            str(path),
            loader_module=pyfunc.__name__,
            data_path=str(bundle),
            signature=pyfunc.signature(),
            pip_requirements=_requirements(model),
        )
    if not (path / BUNDLE_SUBPATH).is_dir():
        raise RuntimeError(f"MLflow placed the bundle elsewhere than {BUNDLE_SUBPATH} in {path}")
    return path


def _requirements(model: KGModel) -> list[str]:
    """Pins for the environment that loads the pyfunc: kgserver, the plugin's package, torch, dgl."""
    import dgl
    import torch

    pins = [f"kgserver=={kgserver.__version__}"]
    top_level = type(model).__module__.split(".", 1)[0]
    for distribution in importlib.metadata.packages_distributions().get(top_level, []):
        if distribution != "kgserver":
            pins.append(f"{distribution}=={importlib.metadata.version(distribution)}")
    pins += [f"torch=={torch.__version__.split('+', 1)[0]}", f"dgl=={dgl.__version__}"]
    return pins


def _experiment_id(client: "MlflowClient", uri: str, name: str) -> str:
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


def _slug(name: str) -> str:
    """A directory name for a graph or model name (which may hold any character)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"
