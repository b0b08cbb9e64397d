"""Data-parallel training (``kgserver train --nproc``): same results as one process, one run, clean failure.

Real worker processes on one machine (gloo over loopback), CoDEx-S imported into
a temporary SQLite store, the embedded MLflow store under a temporary
``KGSERVER_HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kgserver.errors import ConfigurationError, DistributedTrainingFailed
from kgserver.graph import Snapshot
from kgserver.rdf import import_files
from kgserver.registry import get_model
from kgserver.store import open_store
from kgserver.training import TrainConfig, seed_everything, train
from kgserver.training.distributed import Ranks, environment_ranks, launch, process_group

CODEX_S = Path("/work/shared/datasets/codex-s")
KGSERVER = str(Path(sys.executable).parent / "kgserver")
SETTINGS = ["embedding_dim=64", "decoder=distmult", "batch_size=512", "learning_rate=0.01"]
EPOCHS = 2


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CoDEx-S with its own train/valid/test split in a fresh SQLite store; the store's URL."""
    if not CODEX_S.is_dir():
        pytest.skip(f"{CODEX_S} is not here")
    db_url = f"sqlite:///{tmp_path_factory.mktemp('codex') / 'store.db'}"
    with open_store(db_url) as store:
        files = [CODEX_S / f"{split}.tsv.gz" for split in ("train", "valid", "test")]
        import_files(store, files, "codex", format="tsv")
    return db_url


def kgserver(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KGSERVER_HOME": str(home), "KGSERVER_DIST_TIMEOUT_MINUTES": "2"}
    for variable in ("KGSERVER_DATABASE_URL", "MLFLOW_TRACKING_URI", "WORLD_SIZE", "RANK"):
        env.pop(variable, None)
    return subprocess.run([KGSERVER, *args], capture_output=True, text=True, env=env, timeout=600)


def train_args(db_url: str) -> list[str]:
    settings = [arg for item in SETTINGS for arg in ("--set", item)]
    return [
        "train", "--graph", "codex", "--model", "compgcn", "--epochs", str(EPOCHS), "--eval-every", str(EPOCHS),
        "--threads", "1", "--precision", "fp32", "--db", db_url, "--json", *settings,
    ]


def mlflow_client(home: Path):  # type: ignore[no-untyped-def]  # mlflow is imported lazily
    from mlflow import MlflowClient

    uri = f"sqlite:///{home / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_two_processes_match_one_and_track_one_run(codex: str, tmp_path: Path) -> None:
    """``--nproc 2`` from the CLI: one JSON document, one MLflow run, one registered version, and the
    single-process validation MRR (within 0.01) after the same epochs."""
    with open_store(codex) as store:
        snapshot = Snapshot.from_store(store, "codex")
    seed_everything(0)
    model_class = get_model("compgcn")
    hparams = model_class.hyperparameters.parse_assignments(SETTINGS)
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams)
    single = train(model, snapshot, TrainConfig(epochs=EPOCHS, eval_every=EPOCHS, threads=1, mode="full"))

    done = kgserver(*train_args(codex), "--nproc", "2", home=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # exactly one JSON document: rank 0 alone reports
    assert report["epochs"] == EPOCHS and report["mode"] == "full"
    assert abs(report["valid_mrr"] - single.metrics["valid_mrr"]) <= 0.01, (report["valid_mrr"], single.metrics)
    # one progress line per epoch, from rank 0 only
    assert [line.split()[1] for line in done.stderr.splitlines() if line.startswith("epoch ")] == ["1/2", "2/2"]

    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("codex")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].info.run_id == report["run_id"]
    versions = client.search_model_versions("name='codex-compgcn'")
    assert [str(version.version) for version in versions] == ["1"] and str(report["registered_version"]).endswith("1")


def first_rank_trains_second_fails(job: object) -> None:
    """A launch target: rank 0 runs the real training job, rank 1 fails once the group is up."""
    from kgserver.cli.training import run_train_job

    if os.environ["RANK"] == "1":
        with process_group("cpu"):
            raise RuntimeError("rank 1 lost its data")
    run_train_job(job)  # type: ignore[arg-type]


def test_a_failing_worker_fails_the_job_and_its_run(
    codex: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kgserver.cli.training import TrainJob

    monkeypatch.setenv("KGSERVER_HOME", str(tmp_path))
    monkeypatch.setenv("KGSERVER_DIST_TIMEOUT_MINUTES", "2")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # precision given: choosing it measures every rank and agrees on the result (a collective), which
    # rank 1's failure would end before rank 0 opens the run this test is about
    job = TrainJob(
        "codex", "compgcn", SETTINGS, TrainConfig(epochs=EPOCHS, threads=1, precision="fp32"), (0.8, 0.1, 0.1),
        None, None, False, codex, True, frozenset({"threads", "precision"}),
    )
    started = time.monotonic()
    with pytest.raises(DistributedTrainingFailed, match="rank 1 of 2 failed: RuntimeError: rank 1 lost its data"):
        launch(2, first_rank_trains_second_fails, job)
    assert time.monotonic() - started < 90  # no hang until the collective timeout
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("codex")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert [run.info.status for run in runs] == ["FAILED"]  # rank 0 had opened it: ended FAILED, never left RUNNING
    assert not client.search_model_versions("name='codex-compgcn'")


def test_nproc_under_torchrun_is_refused(tmp_path: Path) -> None:
    env = {"WORLD_SIZE": "2", "RANK": "0"}
    done = subprocess.run(
        [KGSERVER, "train", "--graph", "g", "--model", "rgcn", "--nproc", "2", "--no-tracking"],
        capture_output=True, text=True, env={**os.environ, **env, "KGSERVER_HOME": str(tmp_path)}, timeout=120,
    )
    assert done.returncode == 2 and "under torchrun leave --nproc at 1" in done.stderr
    assert done.stdout == ""


def test_one_rank_is_a_plain_process() -> None:
    ranks = Ranks()
    assert ranks.is_main and not ranks.distributed
    assert ranks.step_totals(3.0, 4, True) == (3.0, 4, True)
    assert ranks.decision(0.5, "early_stopping") == (0.5, "early_stopping")
    assert ranks.minimum(7.0) == 7.0 and ranks.local_world_size == 1
    assert torch.distributed.is_initialized() is False


def test_the_local_processes_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The size-aware defaults share a machine's cores and memory among the job's processes on it."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert environment_ranks() == Ranks(3, 4, 1, 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert environment_ranks().local_world_size == 4  # without it, every rank is taken to be on this machine
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    with pytest.raises(ConfigurationError, match="LOCAL_WORLD_SIZE=8 must be in"):
        environment_ranks()


def test_sampled_mode_shards_the_edges_across_two_processes(tmp_path: Path) -> None:
    """Neighbour-sampled training under ``--nproc 2`` (DGL's ``use_ddp`` loader): one report, learning."""
    from .test_cli import import_toy

    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    import_toy(db_url, tmp_path)
    settings = ["embedding_dim=32", "decoder=distmult", "batch_size=64", "learning_rate=0.05"]
    done = kgserver(
        "train", "--graph", "toy", "--model", "compgcn", "--mode", "sampled", "--epochs", "6", "--eval-every", "3",
        "--threads", "1", "--nproc", "2", "--no-tracking", "--db", db_url, "--json",
        *[arg for item in settings for arg in ("--set", item)], home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "sampled" and report["epochs"] == 6
    assert report["valid_mrr"] > 0.2  # chance is about H_64 / 64 ~ 0.07 on this graph
