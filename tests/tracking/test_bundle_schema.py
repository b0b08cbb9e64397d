"""The bundle's config schema: a version, checksums, and bundles saved by an older kgserver."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from kgserver.errors import UnsafeArtifact
from kgserver.graph import Snapshot
from kgserver.tracking.bundle import BUNDLE_FILES, SCHEMA_VERSION, load_bundle, save_bundle

from .helpers import new_model, tail_scores

DATA = Path(__file__).parent / "data"
SCHEMA1_CONFIG = DATA / "rgcn-schema1-config.json"  # as saved while rgcn still had relation_dropout


@pytest.fixture()
def saved(tmp_path: Path, snapshot: Snapshot) -> tuple[Path, torch.nn.Module]:
    model = new_model(snapshot, seed=4, unseen_entity_rate=0.0)  # as every schema-1 model was built
    return save_bundle(tmp_path / "bundle", model, snapshot), model


def test_config_records_schema_version_and_checksum_of_every_file(saved: tuple[Path, torch.nn.Module]) -> None:
    bundle, _ = saved
    config = json.loads((bundle / "config.json").read_text())
    assert config["schema_version"] == SCHEMA_VERSION == 2 and "format" not in config
    assert set(config["sha256"]) == set(BUNDLE_FILES)
    assert all(len(digest) == 64 for digest in config["sha256"].values())


def test_schema1_bundle_with_a_removed_hyperparameter_still_loads(
    saved: tuple[Path, torch.nn.Module], snapshot: Snapshot, caplog: pytest.LogCaptureFixture
) -> None:
    bundle, model = saved
    shutil.copyfile(SCHEMA1_CONFIG, bundle / "config.json")
    with caplog.at_level(logging.WARNING, logger="kgserver.tracking.bundle"):
        loaded = load_bundle(bundle)
    warnings = [record.getMessage() for record in caplog.records]
    assert any("relation_dropout" in line and "dropped" in line for line in warnings), warnings
    assert any("before kgserver recorded checksums" in line for line in warnings), warnings
    assert "relation_dropout" not in loaded.hyperparameters
    # unseen_entity_rate came later: a config without it means the model was built without it
    assert "unseen_entity_rate" not in json.loads(SCHEMA1_CONFIG.read_text())["hyperparameters"]
    assert loaded.hyperparameters["unseen_entity_rate"] == 0.0
    assert torch.equal(loaded.score_tails(snapshot.test[:, 0], snapshot.test[:, 1]), tail_scores(model, snapshot))


def test_schema1_bundle_is_still_checked_for_shapes(saved: tuple[Path, torch.nn.Module]) -> None:
    bundle, _ = saved
    config = json.loads(SCHEMA1_CONFIG.read_text())
    config["hyperparameters"]["embedding_dim"] = 32
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UnsafeArtifact,
        match="tensor 'entity_embedding' is F32 \\[30, 16\\] in the file but config.json implies float32 \\[30, 32\\]",
    ):
        load_bundle(bundle)


def test_a_newer_schema_version_is_refused_by_name(saved: tuple[Path, torch.nn.Module]) -> None:
    bundle, _ = saved
    config = json.loads((bundle / "config.json").read_text())
    config["schema_version"] = SCHEMA_VERSION + 1
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeArtifact, match="config.json: schema_version 3 is not one this kgserver reads"):
        load_bundle(bundle)


def test_a_schema2_bundle_without_checksums_is_refused(saved: tuple[Path, torch.nn.Module]) -> None:
    bundle, _ = saved
    config = json.loads((bundle / "config.json").read_text())
    del config["sha256"]
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeArtifact, match="'sha256' must list the checksum of each of config.json"):
        load_bundle(bundle)
