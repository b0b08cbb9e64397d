"""The model bundle: exact round trip, and refusal of anything that would need pickle."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from kgserver.errors import ModelNotFound, PluginNotFound, UnsafeArtifact
from kgserver.graph import Snapshot
from kgserver.tracking.bundle import BUNDLE_FILES, load_bundle, save_bundle

from .helpers import PLUGIN, Result, TrainConfig, new_model, tail_scores, train


@pytest.fixture(scope="module")
def trained(snapshot: Snapshot) -> Result:
    return train(new_model(snapshot), snapshot, TrainConfig(epochs=2))


@pytest.fixture()
def bundle(tmp_path: Path, trained: Result, snapshot: Snapshot) -> Path:
    return save_bundle(tmp_path / "bundle", trained.model, snapshot)


class PickleBomb:
    """Unpickling this writes a marker file: proof of whether the loader ever unpickles."""

    marker: Path

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "unpickled"))


def test_round_trip_is_bit_identical(bundle: Path, trained: Result, snapshot: Snapshot) -> None:
    assert sorted(p.name for p in bundle.iterdir()) == sorted(BUNDLE_FILES)
    config = json.loads((bundle / "config.json").read_text())
    assert config["plugin"] == PLUGIN
    assert config["num_entities"] == snapshot.num_entities and config["num_relations"] == snapshot.num_relations
    assert config["hyperparameters"] == trained.model.hparams.to_dict()
    assert config["graph"] == snapshot.name

    loaded = load_bundle(bundle, version="tiny-rgcn/1")
    assert loaded.plugin == PLUGIN and loaded.version == "tiny-rgcn/1"
    assert not loaded.model.training
    assert loaded.entities == snapshot.entities and loaded.relations == snapshot.relations
    assert torch.equal(loaded.train_triples, snapshot.train)
    assert loaded.graph().num_edges() == 2 * len(snapshot.train)
    expected = tail_scores(trained.model, snapshot)
    actual = loaded.score_tails(snapshot.test[:, 0], snapshot.test[:, 1])
    assert torch.equal(actual, expected)
    assert loaded.encode() is loaded.encode()  # cached, computed once


def test_torch_save_pickle_in_place_of_weights_is_refused(bundle: Path, tmp_path: Path) -> None:
    PickleBomb.marker = tmp_path / "marker"
    torch.save({"weights": PickleBomb()}, bundle / "weights.safetensors")
    with pytest.raises(UnsafeArtifact, match="weights.safetensors is not a valid safetensors file"):
        load_bundle(bundle)
    assert not PickleBomb.marker.exists()


@pytest.mark.parametrize("name", ["weights.pt", "model.pkl", "extra.pth"])
def test_pickle_file_next_to_weights_is_refused(bundle: Path, tmp_path: Path, name: str) -> None:
    PickleBomb.marker = tmp_path / "marker"
    (bundle / name).write_bytes(pickle.dumps(PickleBomb()))
    with pytest.raises(UnsafeArtifact, match=f"{name}: pickle-based files are never loaded"):
        load_bundle(bundle)
    assert not PickleBomb.marker.exists()


def test_unknown_file_is_refused(bundle: Path) -> None:
    (bundle / "notes.txt").write_text("hello")
    with pytest.raises(UnsafeArtifact, match="unexpected entry"):
        load_bundle(bundle)


def test_config_that_is_not_json_is_refused(bundle: Path) -> None:
    (bundle / "config.json").write_bytes(b"\x80\x04K\x01.")  # a pickle, not JSON
    with pytest.raises(UnsafeArtifact, match="config.json is not a JSON document"):
        load_bundle(bundle)


def test_missing_plugin_is_named(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["plugin"] = "not-installed-model"
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(PluginNotFound, match="not-installed-model") as raised:
        load_bundle(bundle)
    assert PLUGIN in raised.value.available


def test_weights_that_do_not_fit_the_plugin_are_refused(bundle: Path) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["hyperparameters"]["embedding_dim"] = 8
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeArtifact, match="does not match plugin"):
        load_bundle(bundle)


def test_vocabulary_size_mismatch_is_refused(bundle: Path) -> None:
    with open(bundle / "entities.txt", "a", encoding="utf-8") as handle:
        handle.write("http://example.org/entity/extra\n")
    with pytest.raises(UnsafeArtifact, match="entities.txt lists 31 entities but config.json says 30"):
        load_bundle(bundle)


def test_incomplete_or_absent_bundle_is_not_found(bundle: Path, tmp_path: Path) -> None:
    (bundle / "graph.safetensors").unlink()
    with pytest.raises(ModelNotFound, match="missing graph.safetensors"):
        load_bundle(bundle)
    shutil.rmtree(bundle)
    with pytest.raises(ModelNotFound, match="not a directory"):
        load_bundle(bundle)
