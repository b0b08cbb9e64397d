"""``kgserver train`` and ``kgserver evaluate`` as a user runs them, on a tiny imported graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgserver.graph import Snapshot
from kgserver.rdf import import_files
from kgserver.registry import get_model
from kgserver.store import open_store
from kgserver.training import TrainConfig, seed_everything, train

from .conftest import mirrored_snapshot

KGSERVER = str(Path(sys.executable).parent / "kgserver")
EX = "http://example.org/"
SMALL = ["embedding_dim=32", "decoder=distmult", "batch_size=64", "learning_rate=0.05"]
FLAT_KEYS = [
    f"{split}_{metric}"
    for split in ("test", "valid")
    for metric in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "mean_rank")
]


def kgserver(*args: str, home: Path, threads: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KGSERVER_HOME": str(home)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.pop("KGSERVER_DATABASE_URL", None)
    return subprocess.run([KGSERVER, *args], capture_output=True, text=True, env=env, timeout=600)


def import_toy(db_url: str, directory: Path) -> None:
    """The mirrored test graph as train/valid/test TSV files, imported with their splits."""
    snapshot = mirrored_snapshot()
    files = []
    for name in ("train", "valid", "test"):
        path = directory / f"{name}.tsv"
        path.write_text("".join(f"e{h}\tr{r}\te{t}\n" for h, r, t in getattr(snapshot, name).tolist()))
        files.append(path)
    with open_store(db_url) as store:
        import_files(store, files, "toy", format="tsv", base=EX)


def test_train_json_reports_flat_metrics(db_url: str, tmp_path: Path) -> None:
    import_toy(db_url, tmp_path)
    settings = [arg for item in SMALL for arg in ("--set", item)]
    done = kgserver(
        "train",
        "--graph",
        "toy",
        "--model",
        "compgcn",
        "--epochs",
        "6",
        "--eval-every",
        "3",
        "--threads",
        "1",
        "--db",
        db_url,
        "--json",
        *settings,
        home=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # exactly one JSON object on stdout
    for key in FLAT_KEYS:
        assert isinstance(report[key], float), key
    assert 0 < report["test_mrr"] <= 1 and report["test_mean_rank"] >= 1
    assert report["epochs"] == 6 and report["seconds"] > 0
    assert report["graph"] == "toy" and report["model"] == "compgcn"
    # not a terminal: one plain progress line per epoch on stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("epoch ")][-1].startswith("epoch 6/6")


def test_cuda_without_a_device_is_a_clear_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device exists here")
    done = kgserver("train", "--graph", "toy", "--model", "compgcn", "--device", "cuda", home=tmp_path)
    assert done.returncode == 2
    assert "no CUDA device is available" in done.stderr and "--device cpu" in done.stderr
    assert not (tmp_path / "kgserver.db").exists()  # failed before touching the store


def test_bad_hyperparameter_names_the_known_ones(tmp_path: Path) -> None:
    done = kgserver("train", "--graph", "toy", "--model", "rgcn", "--set", "embeding_dim=3", home=tmp_path)
    assert done.returncode == 2
    assert "unknown hyperparameter 'embeding_dim'" in done.stderr and "embedding_dim" in done.stderr


def test_evaluate_reproduces_the_training_metrics(tmp_path: Path) -> None:
    from kgserver.tracking.bundle import save_bundle

    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    import_toy(db_url, tmp_path)
    with open_store(db_url) as store:
        snapshot = Snapshot.from_store(store, "toy")
    seed_everything(0)
    cls = get_model("rgcn")
    model = cls(snapshot.num_entities, snapshot.num_relations, cls.hyperparameters.parse_assignments(SMALL))
    result = train(model, snapshot, TrainConfig(epochs=4, eval_every=2))
    bundle = save_bundle(tmp_path / "bundle", result.model, snapshot)
    done = kgserver(
        "evaluate",
        "--model",
        str(bundle),
        "--graph",
        "toy",
        "--split",
        "test",
        "--db",
        db_url,
        "--json",
        home=tmp_path,
        threads=torch.get_num_threads(),  # the same summation order as the training run
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["triples"] == len(snapshot.test) and report["unknown"] == 0 and report["in_training"] == 0
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "mean_rank", "head_mrr", "tail_mrr"):
        assert report[key] == pytest.approx(result.metrics[f"test_{key}"], rel=1e-5), key


def test_size_aware_choices_are_reported_and_recorded_in_the_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    import_toy(db_url, tmp_path)
    done = kgserver(
        "train", "--graph", "toy", "--model", "compgcn", "--epochs", "2", "--threads", "1", "--db", db_url,
        "--set", "embedding_dim=16", "--set", "decoder=distmult", "--json", home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the choices go to stderr only
    automatic = [line for line in done.stderr.splitlines() if line.startswith("size-aware default: ")]
    assert [line.split()[2] for line in automatic] == [
        "batch_size", "mode", "eval_every", "lr_patience", "eval_batch_size", "precision"
    ]  # fmt: skip
    params = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(report["run_id"]).data.params
    # chosen by size: the value as a parameter, the reason beside it
    assert params["batch_size"] == "1024" and params["auto.batch_size"].startswith("the default")
    assert params["train.eval_every"] == "5" and "CoDEx-S" in params["auto.train.eval_every"]
    assert params["train.lr_patience"] == "1" and params["auto.train.lr_patience"].startswith("the default")
    assert params["train.mode"] == "full" and "auto.train.mode" in params
    # chosen by this machine: bfloat16 steps only where a bfloat16 product was measured faster
    assert params["train.precision"] in {"fp32", "bf16"}
    assert "measured" in params["auto.train.precision"] and "as fast as float32" in params["auto.train.precision"]
    # given by the user: recorded as always, never marked as chosen
    assert params["embedding_dim"] == "16" and "auto.embedding_dim" not in params
    assert params["train.threads"] == "1" and "auto.train.threads" not in params
    assert not {key for key in params if key.startswith("auto.")} - {
        "auto.batch_size", "auto.train.mode", "auto.train.eval_every", "auto.train.lr_patience",
        "auto.train.eval_batch_size", "auto.train.precision",
    }  # fmt: skip


def test_models_available_states_the_size_rules(tmp_path: Path) -> None:
    done = kgserver("models", "available", "--json", home=tmp_path)
    assert done.returncode == 0, done.stderr
    rules = json.loads(done.stdout)["size_defaults"]
    assert {"embedding_dim", "batch_size", "eval_every", "threads", "mode"} <= set(rules)
    assert "65,776" in rules["batch_size"]  # the numbers of the rule, not only its name


def test_long_epochs_report_their_steps_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    from kgserver.cli.training import _EpochLines

    lines = _EpochLines(epochs=3)
    lines.STEP_LINE_SECONDS = 0.0  # a line at every step instead of once a minute
    for step in range(1, 5):
        lines.on_step(2, step, 4)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("epoch 2/3  step 2/4 (50%)") and "min left in this epoch" in err[0]
    assert len(err) == 2  # steps 2 and 3; the first starts the clock and the last ends the epoch
