"""Tracking against a real ``mlflow server`` on loopback, and against one that is down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from kgserver import models
from kgserver.cli.app import app
from kgserver.errors import TrackingUnavailable
from kgserver.graph import Snapshot
from kgserver.tracking import TrainingRun

from .helpers import (
    TrainConfig,
    free_port,
    new_model,
    quiet_env,
    script,
    serving_process,
    tail_scores,
    track_training,
    train,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` with its own SQLite backend and proxied artifact root."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [
        script("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'server.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    uri = f"http://127.0.0.1:{port}"
    # Ready when the REST API answers (the health route answers earlier, before the store is warm).
    with serving_process(
        command, f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", root / "server.log", quiet_env()
    ):
        yield uri


def test_run_registry_and_load_over_http(server_uri: str, module_home: Path, snapshot: Snapshot) -> None:
    run, result = track_training(snapshot, tracking_uri=server_uri, register_as="served-tiny")
    assert run.registered_version == "served-tiny/1"
    client = MlflowClient(server_uri, server_uri)
    recorded = client.get_run(run.run_id)
    assert recorded.info.status == "FINISHED"
    assert recorded.data.metrics["test_mrr"] == pytest.approx(result.metrics["test_mrr"])
    assert recorded.data.params["model_type"] == "rgcn" and recorded.data.params["train.epochs"] == "2"
    assert len(client.get_metric_history(run.run_id, "loss")) == 2
    assert recorded.data.tags["graph.sha256"] == snapshot.fingerprint()["sha256"]
    assert {a.path for a in client.list_artifacts(run.run_id)} >= {"training_curves.png", "config.json"}
    assert not (module_home / "mlflow.db").exists()  # the given URI is used, not the embedded store

    promoted = runner.invoke(app, ["models", "promote", "served-tiny", "1", "--tracking-uri", server_uri])
    assert promoted.exit_code == 0, promoted.output
    listed = runner.invoke(app, ["models", "list", "--json"], env={"MLFLOW_TRACKING_URI": server_uri})
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.output)[0]["aliases"] == {"champion": "1"}
    shown = runner.invoke(app, ["models", "show", "served-tiny@champion", "--json", "--tracking-uri", server_uri])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["params"]["embedding_dim"] == "16"
    compared = runner.invoke(app, ["models", "compare", "served-tiny", "--json", "--tracking-uri", server_uri])
    assert compared.exit_code == 0, compared.output
    assert json.loads(compared.output)["versions"][0]["metrics"]["test_mrr"] == pytest.approx(
        result.metrics["test_mrr"]
    )

    loaded = models.load("served-tiny@champion", tracking_uri=server_uri)
    assert loaded.version == "served-tiny/1"
    expected = tail_scores(result.model, snapshot)
    assert torch.equal(loaded.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), expected)
    by_run = models.load(f"runs:/{run.run_id}/model", tracking_uri=server_uri)
    assert torch.equal(by_run.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), expected)


class CountingObserver:
    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.epochs += 1


def test_tracking_server_down_fails_fast_before_training(module_home: Path, snapshot: Snapshot) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    model = new_model(snapshot)
    observer = CountingObserver()
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=f"MLflow tracking at {down} is not reachable.*--no-tracking"):
        run = TrainingRun.start(model, snapshot, TrainConfig(), tracking_uri=down)
        with run:  # never reached: the failure comes before any epoch
            train(model, snapshot, TrainConfig(), observer=observer)
    assert time.monotonic() - started < 10
    assert observer.epochs == 0


def test_unreachable_database_store_fails_fast(module_home: Path, snapshot: Snapshot) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/mlflow"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="is not reachable"):
        TrainingRun.start(new_model(snapshot), snapshot, TrainConfig(), tracking_uri=down)
    assert time.monotonic() - started < 10


def test_cli_reports_unreachable_tracking(module_home: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["models", "list", "--tracking-uri", down])
    assert isinstance(result.exception, TrackingUnavailable)
