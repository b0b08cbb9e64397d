"""Tracking and the registry on the embedded MLflow store (SQLite + artifacts under KGSERVER_HOME)."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from kgserver import models
from kgserver.cli.app import app
from kgserver.errors import ModelNotFound, UnsafeArtifact
from kgserver.graph import Snapshot
from kgserver.tracking import embedded_tracking_uri, save_untracked

from .helpers import HPARAMS, PLUGIN, tail_scores, track_training

NAME = "tiny-rgcn"
FINAL_KEYS = [
    f"{split}_{key}"
    for split in ("test", "valid")
    for key in ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "mean_rank")
]
EPOCH_KEYS = ("loss", "valid_mrr", "valid_hits_at_1", "valid_hits_at_3", "valid_hits_at_10")

runner = CliRunner()


@pytest.fixture(scope="module")
def tracked(module_home: Path, snapshot: Snapshot) -> SimpleNamespace:
    """Two trainings of the same graph and plugin: versions 1 and 2 of tiny-rgcn."""
    first, first_result = track_training(snapshot, seed=0)
    second, second_result = track_training(snapshot, seed=1)
    return SimpleNamespace(
        home=module_home,
        uri=embedded_tracking_uri(),
        client=MlflowClient(embedded_tracking_uri(), embedded_tracking_uri()),
        runs=[first, second],
        results=[first_result, second_result],
    )


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_embedded_store_lives_under_kgserver_home(tracked: SimpleNamespace) -> None:
    assert tracked.uri == f"sqlite:///{tracked.home / 'mlflow.db'}"
    assert (tracked.home / "mlflow.db").is_file()
    run = tracked.client.get_run(tracked.runs[0].run_id)
    assert run.info.artifact_uri.startswith((tracked.home / "mlartifacts").as_uri())
    experiment = tracked.client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tiny"
    assert run.info.status == "FINISHED"


def test_run_records_params_metrics_tags(tracked: SimpleNamespace, snapshot: Snapshot) -> None:
    run = tracked.client.get_run(tracked.runs[0].run_id)
    result = tracked.results[0]
    params = run.data.params
    assert params["model_type"] == PLUGIN
    assert re.fullmatch(rf"{PLUGIN}-\d{{8}}-\d{{6}}", run.info.run_name), run.info.run_name
    for key, value in result.model.hparams.to_dict().items():
        assert params[key] == (value if isinstance(value, str) else json.dumps(value)), key
    assert params["embedding_dim"] == str(HPARAMS["embedding_dim"])
    assert params["train.epochs"] == "2" and params["train.seed"] == "0"

    for key in FINAL_KEYS:
        assert run.data.metrics[key] == pytest.approx(result.metrics[key]), key
    for key in EPOCH_KEYS:
        history = tracked.client.get_metric_history(run.info.run_id, key)
        for row in result.history:
            at_epoch = [metric.value for metric in history if metric.step == row["epoch"]]
            assert row[key] in [pytest.approx(value) for value in at_epoch], (key, row)
    assert len(tracked.client.get_metric_history(run.info.run_id, "loss")) == len(result.history) == 2

    tags = run.data.tags
    fingerprint = snapshot.fingerprint()
    assert tags["graph"] == "tiny" and tags["model_type"] == PLUGIN
    assert tags["graph.sha256"] == fingerprint["sha256"] and len(tags["graph.sha256"]) == 64
    assert tags["graph.num_train"] == str(len(snapshot.train))
    assert tags["graph.num_valid"] == str(len(snapshot.valid))
    assert tags["graph.num_test"] == str(len(snapshot.test))
    assert tags["torch.version"] == torch.__version__
    assert {"kgserver.version", "dgl.version"} <= set(tags)


def test_run_artifacts_and_logged_model(tracked: SimpleNamespace, tmp_path: Path) -> None:
    run_id = tracked.runs[0].run_id
    names = {a.path for a in tracked.client.list_artifacts(run_id)}
    assert {"training_curves.png", "config.json"} <= names
    png = Path(tracked.client.download_artifacts(run_id, "training_curves.png", str(tmp_path)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    config = json.loads(Path(tracked.client.download_artifacts(run_id, "config.json", str(tmp_path))).read_text())
    assert config["plugin"] == PLUGIN and config["hyperparameters"]["embedding_dim"] == HPARAMS["embedding_dim"]

    logged = tracked.client.get_logged_model(tracked.runs[0].model_id)
    assert logged.source_run_id == run_id and str(logged.status) == "READY"
    bundle_files = {a.path for a in tracked.client.list_logged_model_artifacts(logged.model_id, "data/bundle")}
    assert bundle_files == {
        f"data/bundle/{name}"
        for name in ("config.json", "weights.safetensors", "entities.txt", "relations.txt", "graph.safetensors")
    }
    top = {a.path for a in tracked.client.list_logged_model_artifacts(logged.model_id)}
    assert "MLmodel" in top and not any(path.endswith((".pkl", ".pt", ".cloudpickle")) for path in top)


def test_versions_registered_with_tags(tracked: SimpleNamespace) -> None:
    assert [run.registered_version for run in tracked.runs] == [f"{NAME}/1", f"{NAME}/2"]
    version = tracked.client.get_model_version(NAME, "1")
    assert version.run_id == tracked.runs[0].run_id
    assert version.tags["graph"] == "tiny" and version.tags["model_type"] == PLUGIN
    assert float(version.tags["test_mrr"]) == pytest.approx(tracked.results[0].metrics["test_mrr"], abs=1e-6)


def test_promote_list_show_compare(tracked: SimpleNamespace) -> None:
    out = cli("models", "promote", NAME, "1")
    assert f"{NAME}@champion -> version 1" in out
    moved = json.loads(cli("models", "promote", NAME, "2", "--alias", "challenger", "--json"))
    assert moved == {"name": NAME, "alias": "challenger", "version": "2", "previous": None}

    listed = json.loads(cli("models", "list", "--json"))
    assert [m["name"] for m in listed] == [NAME]
    assert listed[0]["aliases"] == {"challenger": "2", "champion": "1"}
    by_version = {v["version"]: v for v in listed[0]["versions"]}
    assert by_version["1"]["aliases"] == ["champion"] and by_version["2"]["aliases"] == ["challenger"]
    assert by_version["1"]["test_mrr"] == pytest.approx(tracked.results[0].metrics["test_mrr"], abs=1e-6)
    table = cli("models", "list")
    assert NAME in table and "champion" in table

    shown = json.loads(cli("models", "show", f"{NAME}@champion", "--json"))
    assert shown["version"] == "1" and shown["run_id"] == tracked.runs[0].run_id
    assert shown["metrics"]["test_mrr"] == pytest.approx(tracked.results[0].metrics["test_mrr"])
    assert shown["params"]["model_type"] == PLUGIN and shown["run_tags"]["graph"] == "tiny"
    assert json.loads(cli("models", "show", NAME, "--json"))["version"] == "2"
    assert json.loads(cli("models", "show", f"{NAME}/2", "--json"))["aliases"] == ["challenger"]
    assert "test_mrr" in cli("models", "show", f"{NAME}/1")

    compared = json.loads(cli("models", "compare", NAME, "--json"))
    assert [v["version"] for v in compared["versions"]] == ["1", "2"]
    for column, result in zip(compared["versions"], tracked.results):
        assert column["metrics"]["test_mrr"] == pytest.approx(result.metrics["test_mrr"])
    assert "train.seed" in compared["differing_params"]
    assert "embedding_dim" in compared["params"] and "embedding_dim" not in compared["differing_params"]
    table = cli("models", "compare", NAME)
    assert "v1 (champion)" in table and "v2 (challenger)" in table and "test_mrr" in table


def test_unknown_references_are_clear_errors(tracked: SimpleNamespace) -> None:
    for ref in (f"{NAME}@nonexistent-alias", f"{NAME}/99", "no-such-model@champion", "runs:/0123456789abcdef/model"):
        with pytest.raises(ModelNotFound):
            models.resolve(ref)
    with pytest.raises(ModelNotFound, match="neither a registered model reference nor a bundle directory"):
        models.load("./no/such/bundle")
    result = runner.invoke(app, ["models", "promote", NAME, "42"])
    assert result.exit_code != 0 and isinstance(result.exception, ModelNotFound)
    result = runner.invoke(app, ["models", "show", "no-such-model"])
    assert isinstance(result.exception, ModelNotFound)


def test_load_by_alias_version_and_run_is_bit_identical(tracked: SimpleNamespace, snapshot: Snapshot) -> None:
    cli("models", "promote", NAME, "1")
    assert models.resolve(f"{NAME}@champion") == f"{NAME}/1"
    loaded = models.load(f"{NAME}@champion")
    assert loaded.version == f"{NAME}/1" and loaded.plugin == PLUGIN
    expected = tail_scores(tracked.results[0].model, snapshot)
    assert torch.equal(loaded.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), expected)

    second = models.load(f"{NAME}/2")
    assert torch.equal(
        second.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), tail_scores(tracked.results[1].model, snapshot)
    )
    by_run = models.load(f"runs:/{tracked.runs[1].run_id}/model")
    assert by_run.version == f"runs:/{tracked.runs[1].run_id}/model"
    assert torch.equal(
        by_run.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]),
        second.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]),
    )

    cli("models", "promote", NAME, "2")
    assert models.resolve(f"{NAME}@champion") == f"{NAME}/2"  # what a serving poller sees
    cli("models", "promote", NAME, "1")  # and the roll back
    assert models.resolve(f"{NAME}@champion") == f"{NAME}/1"


def test_pyfunc_flavor_answers_top_k_tails(
    tracked: SimpleNamespace, snapshot: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    cli("models", "promote", NAME, "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked.uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    heads = [snapshot.entities[int(h)] for h in snapshot.test[:3, 0]]
    relations = [snapshot.relations[int(r)] for r in snapshot.test[:3, 1]]
    answer = pyfunc.predict(pd.DataFrame({"head": heads, "relation": relations}), params={"k": 4})
    assert list(answer.columns) == ["head", "relation", "rank", "tail", "score"]
    assert len(answer) == 12
    expected = torch.topk(tail_scores(tracked.results[0].model, snapshot)[:3], 4, dim=1)
    for row in range(3):
        rows = answer[(answer["head"] == heads[row]) & (answer["relation"] == relations[row])]
        assert list(rows["rank"]) == [1, 2, 3, 4]
        assert list(rows["tail"]) == [snapshot.entities[int(i)] for i in expected.indices[row]]
        assert list(rows["score"]) == pytest.approx(expected.values[row].tolist())
    per_row = pyfunc.predict(pd.DataFrame({"head": heads[:2], "relation": relations[:2], "k": [1, 2]}))
    assert list(per_row["rank"]) == [1, 1, 2]


def test_tampered_registered_artifact_is_refused(tracked: SimpleNamespace, tmp_path: Path) -> None:
    logged = tracked.client.get_logged_model(tracked.runs[1].model_id)
    bundle = Path(logged.artifact_location.removeprefix("file://")) / "data" / "bundle"
    weights = bundle / "weights.safetensors"
    original = weights.read_bytes()
    try:
        torch.save(tracked.results[1].model.state_dict(), weights)  # a pickle where safetensors belongs
        with pytest.raises(UnsafeArtifact, match="not a valid safetensors file"):
            models.load(f"{NAME}/2")
        weights.write_bytes(original)
        (bundle / "extra.pkl").write_bytes(pickle.dumps({"x": 1}))
        with pytest.raises(UnsafeArtifact, match="extra.pkl: pickle-based files are never loaded"):
            models.load(f"{NAME}/2")
    finally:
        weights.write_bytes(original)
        (bundle / "extra.pkl").unlink(missing_ok=True)
    assert models.load(f"{NAME}/2").version == f"{NAME}/2"


def test_models_available_lists_plugins(home: Path) -> None:
    listed = json.loads(cli("models", "available", "--json"))
    assert {"rgcn", "compgcn", "gatv2"} <= set(listed["models"])
    rgcn = listed["models"]["rgcn"]
    assert rgcn["description"] and rgcn["training_mode"] in ("1-n", "negatives")
    assert rgcn["hyperparameters"]["embedding_dim"]["type"] == "int"
    assert listed["failed"] == {}
    assert "embedding_dim" in cli("models", "available")


def test_untracked_bundle_saves_under_home_and_loads_by_path(home: Path, snapshot: Snapshot) -> None:
    from .helpers import TrainConfig, new_model, train

    result = train(new_model(snapshot), snapshot, TrainConfig(epochs=1))
    path = save_untracked(result.model, snapshot, "tiny-rgcn")
    assert path.parent == home.resolve() / "models" / "tiny-rgcn"
    assert not (home / "mlflow.db").exists()  # nothing touched MLflow
    assert models.resolve(str(path)) == str(path)
    loaded = models.load(str(path))
    assert loaded.version == str(path)
    assert torch.equal(
        loaded.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), tail_scores(result.model, snapshot)
    )


def test_ui_with_a_tracking_server_points_to_it(home: Path) -> None:
    out = cli("ui", "--tracking-uri", "http://127.0.0.1:5999")
    assert "http://127.0.0.1:5999 is an MLflow server with its own UI" in out


def test_training_that_raises_leaves_a_failed_run_and_no_version(tracked: SimpleNamespace, snapshot: Snapshot) -> None:
    from kgserver.tracking import TrainingRun

    from .helpers import TrainConfig, new_model

    run = TrainingRun.start(new_model(snapshot), snapshot, TrainConfig(), register_as="never-registered")
    with pytest.raises(RuntimeError, match="diverged"), run:
        run.on_epoch_end(1, {"loss": 0.9})
        raise RuntimeError("diverged")
    recorded = tracked.client.get_run(run.run_id)
    assert recorded.info.status == "FAILED" and recorded.data.metrics["loss"] == pytest.approx(0.9)
    assert run.registered_version is None
    assert "never-registered" not in {m.name for m in tracked.client.search_registered_models()}
