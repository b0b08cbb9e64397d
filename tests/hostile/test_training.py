"""Hostile training input: hyperparameters torch would choke on, names the registry cannot
hold, aliases MLflow refuses, and a tracking store that stops taking writes mid-training."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from hostile.helpers import KGSERVER, NUM_ENTITIES, NUM_RELATIONS, tiny_snapshot
from kgserver.errors import ConfigurationError, TrackingUnavailable
from kgserver.registry import get_model
from kgserver.training import Observers, TrainConfig, seed_everything, train

SMALL = ["--set", "embedding_dim=16", "--set", "decoder=distmult", "--set", "num_bases=2"]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store holding the tiny graph as ``tiny``, with its split."""
    from kgserver.rdf import import_files
    from kgserver.store import open_store

    directory = tmp_path_factory.mktemp("store")
    snapshot = tiny_snapshot()
    files = []
    for split in ("train", "valid", "test"):
        path = directory / f"{split}.tsv"
        path.write_text("".join(f"e{h}\tr{r}\te{t}\n" for h, r, t in getattr(snapshot, split).tolist()))
        files.append(path)
    url = f"sqlite:///{directory / 'kg.db'}"
    with open_store(url) as store:
        import_files(store, files, "tiny", format="tsv", base="http://example.org/")
    return url


def kgserver(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "KGSERVER_DATABASE_URL")
    }
    env["KGSERVER_HOME"] = str(home)
    return subprocess.run([KGSERVER, *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("learning_rate=nan", "learning_rate must be a finite number, got nan"),
        ("learning_rate=-1", "learning_rate must be at least 0, got -1.0"),
        ("dropout=inf", "dropout must be a finite number, got inf"),
        ("weight_decay=-1e-3", "weight_decay must be at least 0, got -0.001"),
    ],
)
def test_out_of_range_hyperparameter_is_a_configuration_error(
    store_url: str, tmp_path: Path, assignment: str, message: str
) -> None:
    done = kgserver(
        "train",
        "--graph",
        "tiny",
        "--model",
        "rgcn",
        "--epochs",
        "1",
        "--db",
        store_url,
        "--no-tracking",
        *SMALL,
        "--set",
        assignment,
        home=tmp_path,
    )
    assert done.returncode == ConfigurationError.exit_code == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "--set for model 'rgcn'" in done.stderr and message in done.stderr
    assert not (tmp_path / "models").exists()  # nothing was trained or saved


@pytest.mark.parametrize("name", ["x@y", "a/b", "models:x", " padded", ""])
def test_unregistrable_model_name_fails_before_training(store_url: str, tmp_path: Path, name: str) -> None:
    done = kgserver(
        "train",
        "--graph",
        "tiny",
        "--model",
        "rgcn",
        "--epochs",
        "1",
        "--db",
        store_url,
        "--register-as",
        name,
        *SMALL,
        home=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert f"--register-as {name!r} cannot name a registered model" in done.stderr.replace("\n", "")
    assert not [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert not (tmp_path / "mlflow.db").exists()  # no run was opened


def test_default_model_name_from_an_unusable_graph_name_names_the_option() -> None:
    from kgserver.tracking.run import registered_model_name

    assert registered_model_name(None, "codex", "compgcn") == "codex-compgcn"
    with pytest.raises(ConfigurationError, match=r"--register-as \(default GRAPH-MODEL\) 'x@y-compgcn' cannot name"):
        registered_model_name(None, "x@y", "compgcn")


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("bad alias/", "--alias 'bad alias/' is not a valid alias"),
        ("latest", "--alias 'latest' is reserved by MLflow"),
        ("v3", "--alias 'v3' is reserved by MLflow"),
    ],
)
def test_promote_with_a_bad_alias_names_the_alias(tmp_path: Path, alias: str, message: str) -> None:
    done = kgserver("models", "promote", "tiny-rgcn", "1", "--alias", alias, home=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "not found" not in done.stderr
    assert message in done.stderr.replace("\n", "")


class LockStoreAt:
    """An epoch observer that, from epoch ``epoch`` on, holds an exclusive lock on the MLflow
    SQLite store for ``seconds`` (another process writing, a backup, a full disk): the store
    refuses writes until then, and takes them again afterwards."""

    def __init__(self, database: Path, epoch: int, seconds: float) -> None:
        self.database, self.epoch, self.seconds = database, epoch, seconds
        self.released = threading.Event()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if epoch != self.epoch:
            return
        connection = sqlite3.connect(self.database, isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN EXCLUSIVE")

        def release() -> None:
            connection.execute("ROLLBACK")
            connection.close()
            self.released.set()

        threading.Timer(self.seconds, release).start()


def test_store_refusing_writes_mid_training_fails_the_run_with_one_error(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from kgserver.tracking import TrainingRun

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    snapshot = tiny_snapshot()
    seed_everything(0)
    cls = get_model("rgcn")
    model = cls(
        NUM_ENTITIES, NUM_RELATIONS, cls.hyperparameters.from_dict({"embedding_dim": 16, "decoder": "distmult"})
    )
    config = TrainConfig(epochs=4, eval_every=1, threads=1)
    # MLflow waits 20 s for a locked SQLite store; the lock outlives that wait, then goes
    lock = LockStoreAt(database, epoch=2, seconds=26)
    run = TrainingRun.start(model, snapshot, config, tracking_uri=uri, register_as="tiny-locked")
    with pytest.raises(TrackingUnavailable) as raised, run:
        result = train(model, snapshot, config, observer=Observers(lock, run))
        run.finish(result)
    assert lock.released.wait(60)
    message = str(raised.value)
    assert f"stopped accepting writes during run {run.run_id}" in message and "nothing was registered" in message
    assert "RUNNING" not in message  # the store took the final write
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.search_registered_models() == []


def test_store_locked_for_good_mid_training_is_one_cli_error_naming_the_run(store_url: str, tmp_path: Path) -> None:
    env = {
        key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "KGSERVER_DATABASE_URL")
    }
    env["KGSERVER_HOME"] = str(tmp_path)
    command = [
        KGSERVER,
        "train",
        "--graph",
        "tiny",
        "--model",
        "rgcn",
        "--db",
        store_url,
        "--threads",
        "1",
        "--epochs",
        "100000",
        "--eval-every",
        "100000",
        "--max-minutes",
        "5",
        "--register-as",
        "tiny-locked",
        *SMALL,
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:  # epochs are logged as they end: lock the store after the first
        lines.append(line)
        if line.startswith("epoch 1/"):
            break
    else:
        pytest.fail("".join(lines))
    locker = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        stdout, rest = process.communicate(timeout=300)
    finally:
        locker.close()
    stderr = "".join(lines) + rest
    assert process.returncode == TrackingUnavailable.exit_code == 1, stderr
    assert "Traceback" not in stderr and stdout == ""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert "stopped accepting writes during run" in stderr and "stays RUNNING" in stderr
