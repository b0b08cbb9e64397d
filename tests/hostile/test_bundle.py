"""Hostile model bundles: tampered sizes, tampered files, non-finite values.

Each bundle is a real one written by ``save_bundle`` from a small built-in ``rgcn``
model and then altered the way a broken disk, a careless edit or an attacker would.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hostile.helpers import KGSERVER, NUM_ENTITIES, NUM_RELATIONS, tiny_snapshot
from kgserver.errors import UnsafeArtifact
from kgserver.registry import KGModel, get_model
from kgserver.tracking.bundle import load_bundle, save_bundle


def tiny_model() -> KGModel:
    torch.manual_seed(0)
    cls = get_model("rgcn")
    hparams = cls.hyperparameters.from_dict({"embedding_dim": 16, "decoder": "distmult", "num_bases": 2})
    return cls(NUM_ENTITIES, NUM_RELATIONS, hparams)


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return save_bundle(tmp_path / "bundle", tiny_model(), tiny_snapshot())


def edit_config(bundle: Path, **hyperparameters: object) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["hyperparameters"].update(hyperparameters)
    (bundle / "config.json").write_text(json.dumps(config))


def test_huge_embedding_dim_in_config_is_refused_before_allocating(bundle: Path) -> None:
    edit_config(bundle, embedding_dim=2_000_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(
        UnsafeArtifact,
        match=(
            r"tensor 'entity_embedding' is F32 \[30, 16\] in the file "
            r"but config.json implies float32 \[30, 2000000\]"
        ),
    ):
        load_bundle(bundle)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 100 * 1024, f"peak RSS grew by {grown_kib} KiB while refusing the bundle"


def test_huge_embedding_dim_is_one_clear_cli_error(bundle: Path, tmp_path: Path) -> None:
    edit_config(bundle, embedding_dim=2_000_000)
    env = {**os.environ, "KGSERVER_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [KGSERVER, "evaluate", "--model", str(bundle), "--graph", "tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == UnsafeArtifact.exit_code == 1
    assert "Traceback" not in done.stderr
    assert "entity_embedding" in done.stderr and "config.json implies" in done.stderr


def test_nan_weights_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.relation_embedding[2, 5] = float("nan")
    bundle = save_bundle(tmp_path / "bundle", model, tiny_snapshot())  # checksums match: training diverged
    with pytest.raises(UnsafeArtifact, match="tensor 'relation_embedding' holds non-finite values"):
        load_bundle(bundle)


def test_weights_changed_after_saving_are_refused_naming_the_file(bundle: Path) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.entity_embedding[0, 0] = float("inf")
    save_file(
        {key: value.contiguous() for key, value in model.state_dict().items()}, str(bundle / "weights.safetensors")
    )
    with pytest.raises(UnsafeArtifact, match=r"weights\.safetensors has changed since the bundle was saved"):
        load_bundle(bundle)


def test_reordered_vocabulary_is_refused_naming_the_file(bundle: Path) -> None:
    path = bundle / "entities.txt"
    lines = path.read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]  # same count, so only the checksum can tell
    path.write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(UnsafeArtifact, match=r"entities\.txt has changed since the bundle was saved"):
        load_bundle(bundle)


def test_other_training_triples_are_refused_naming_the_file(bundle: Path) -> None:
    save_file({"triples": tiny_snapshot().train[:10].contiguous()}, str(bundle / "graph.safetensors"))
    with pytest.raises(UnsafeArtifact, match=r"graph\.safetensors has changed since the bundle was saved"):
        load_bundle(bundle)


def test_edited_hyperparameter_is_refused_naming_the_config(bundle: Path) -> None:
    edit_config(bundle, dropout=0.5)  # fits the weights' shapes: only the checksum can tell
    with pytest.raises(UnsafeArtifact, match=r"config\.json has changed since the bundle was saved"):
        load_bundle(bundle)


def test_nan_in_config_is_refused_naming_the_config(bundle: Path) -> None:
    path = bundle / "config.json"
    path.write_text(path.read_text().replace('"learning_rate": 0.01', '"learning_rate": NaN'))
    with pytest.raises(UnsafeArtifact, match=r"config\.json is not a JSON document \(NaN is not a number JSON allows"):
        load_bundle(bundle)


def test_out_of_range_hyperparameter_in_config_is_refused_naming_the_key(bundle: Path) -> None:
    edit_config(bundle, dropout=1.5)
    with pytest.raises(
        UnsafeArtifact,
        match=r"config\.json: hyperparameters do not fit plugin 'rgcn': dropout must be in \[0, 1\), got 1\.5",
    ):
        load_bundle(bundle)


def test_extra_tensor_in_weights_is_refused_naming_it(bundle: Path) -> None:
    state = {key: value.contiguous() for key, value in tiny_model().state_dict().items()}
    state["payload"] = torch.zeros(4)
    save_file(state, str(bundle / "weights.safetensors"))
    with pytest.raises(UnsafeArtifact, match="unexpected tensor\\(s\\) 'payload'"):
        load_bundle(bundle)
