"""The "unseen entity" capability: the hyperparameter, the masking in training, and bundles."""

from __future__ import annotations

import json
from pathlib import Path

import dgl
import pytest
import torch

from kgserver.graph.snapshot import Snapshot
from kgserver.registry import get_model
from kgserver.tracking import bundle as bundle_module
from kgserver.tracking.bundle import load_bundle, save_bundle
from kgserver.training import TrainConfig, train
from tests.plugins.conftest import NUM_ENTITIES, NUM_RELATIONS, build

PLUGINS = ("compgcn", "gatv2", "rgcn")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_plugins_declare_the_capability_and_the_rate_is_range_checked(plugin: str) -> None:
    cls = get_model(plugin)
    assert cls.embeds_unseen_entities
    assert cls.hyperparameters().to_dict()["unseen_entity_rate"] == 0.1  # on by default: see bench/RESULTS.md
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="unseen_entity_rate must be in \\[0, 1\\)"):
            cls.hyperparameters.from_dict({"unseen_entity_rate": bad})


@pytest.mark.parametrize("plugin", PLUGINS)
def test_only_a_model_trained_with_masking_has_the_unseen_vector(plugin: str) -> None:
    plain = build(plugin, unseen_entity_rate=0.0)
    assert not plain.can_embed_unseen_entities()
    assert not any("unseen" in name for name in plain.state_dict())  # the weights of before, unchanged
    with pytest.raises(NotImplementedError, match="unseen_entity_rate 0"):
        plain.unseen_entity_input()
    masked = build(plugin, unseen_entity_rate=0.5)
    assert masked.can_embed_unseen_entities()
    assert masked.unseen_entity_input().shape == (16,)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_training_replaces_a_fraction_of_inputs_and_learns_the_unseen_vector(plugin: str, graph: dgl.DGLGraph) -> None:
    model = build(plugin, unseen_entity_rate=0.5, dropout=0.0)
    model.eval()
    clean, _ = model.encode(graph)
    again, _ = model.encode(graph)
    assert torch.equal(clean, again), "no masking outside training"
    model.train()
    torch.manual_seed(1)
    masked, _ = model.encode(graph)
    differs = (masked - clean).abs().amax(dim=1) > 1e-6
    assert 0 < int(differs.sum()) <= NUM_ENTITIES
    masked.pow(2).sum().backward()
    assert model.unseen_embedding is not None and model.unseen_embedding.grad is not None
    assert float(model.unseen_embedding.grad.abs().sum()) > 0


@pytest.mark.parametrize("plugin", PLUGINS)
def test_a_node_beyond_the_vocabulary_gets_the_unseen_input(plugin: str, graph: dgl.DGLGraph) -> None:
    """A graph with one more node: the new node's input is the unseen vector, so an isolated new
    node's embedding is what the unseen vector alone gives, and the known nodes keep theirs."""
    model = build(plugin, unseen_entity_rate=0.5, dropout=0.0).eval()
    src, dst = graph.edges()
    bigger = dgl.graph((src, dst), num_nodes=NUM_ENTITIES + 1)
    bigger.edata["rel"] = graph.edata["rel"]
    before, _ = model.encode(graph)
    after, _ = model.encode(bigger)
    torch.testing.assert_close(after[:NUM_ENTITIES], before)
    plain = build(plugin, unseen_entity_rate=0.0)
    with pytest.raises(ValueError, match="nodes but the model was built for"):
        plain.encode(bigger)


def _snapshot(graph: dgl.DGLGraph) -> Snapshot:
    src, dst = graph.edges()
    half = graph.num_edges() // 2
    train = torch.stack([src[:half], graph.edata["rel"][:half], dst[:half]], dim=1)
    empty = torch.empty(0, 3, dtype=torch.int64)
    return Snapshot(
        "toy", [f"e{i}" for i in range(NUM_ENTITIES)], [f"r{i}" for i in range(NUM_RELATIONS)], train, empty, empty
    )


def test_the_bundle_records_the_capability(tmp_path: Path, graph: dgl.DGLGraph) -> None:
    model = build("gatv2", unseen_entity_rate=0.25)
    path = save_bundle(tmp_path / "b", model, _snapshot(graph))
    loaded = load_bundle(path)
    assert loaded.model.can_embed_unseen_entities()
    assert loaded.hyperparameters["unseen_entity_rate"] == 0.25
    torch.testing.assert_close(loaded.model.unseen_entity_input(), model.unseen_entity_input())


def test_a_bundle_saved_before_the_hyperparameter_existed_still_loads(tmp_path: Path, graph: dgl.DGLGraph) -> None:
    path = save_bundle(tmp_path / "old", build("compgcn", unseen_entity_rate=0.0), _snapshot(graph))  # as then built
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    del config["hyperparameters"]["unseen_entity_rate"]  # as written before this hyperparameter
    del config["sha256"]["config.json"]
    config["sha256"] = {"config.json": bundle_module._config_digest(config), **config["sha256"]}
    config_path.write_text(json.dumps(config))
    loaded = load_bundle(path)
    assert not loaded.model.can_embed_unseen_entities()


def test_the_trainer_learns_the_unseen_vector_and_validation_does_not_mask(graph: dgl.DGLGraph) -> None:
    src, dst = graph.edges()
    half = graph.num_edges() // 2
    triples = torch.stack([src[:half], graph.edata["rel"][:half], dst[:half]], dim=1)
    snapshot = Snapshot(
        "toy",
        [f"e{i}" for i in range(NUM_ENTITIES)],
        [f"r{i}" for i in range(NUM_RELATIONS)],
        triples[:160],
        triples[160:180],
        triples[180:],
    )
    model = build("compgcn", unseen_entity_rate=0.3)
    assert model.unseen_embedding is not None
    before = model.unseen_embedding.detach().clone()
    result = train(model, snapshot, TrainConfig(epochs=2, eval_every=1, seed=0, mode="full"))
    assert result.model.unseen_embedding is not None
    assert not torch.equal(result.model.unseen_embedding.detach(), before)
    again = train(build("compgcn", unseen_entity_rate=0.3), snapshot, TrainConfig(epochs=2, eval_every=1, seed=0))
    assert again.metrics["test_mrr"] == result.metrics["test_mrr"]  # the masking draws from the seeded sources
