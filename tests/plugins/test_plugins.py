"""Every built-in plugin: registration, hyperparameters, gradients, invariances, blocks."""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path

import dgl
import pytest
import torch

from kgserver.registry import Hyperparameters, KGModel, available_models, failed_plugins, get_model

BUILT_IN = ("rgcn", "compgcn", "gatv2")
NUM_ENTITIES, NUM_RELATIONS = 40, 5  # the sizes of the conftest graph

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"

VARIANTS = [
    {},
    {"decoder": "distmult"},
    {"decoder": "conve"},
    {"num_layers": 2, "residual": False, "edge_dropout": 0.3},
]


def test_built_in_plugins_register_through_entry_points() -> None:
    models = available_models()
    assert set(BUILT_IN) <= set(models), failed_plugins()
    for name in BUILT_IN:
        cls = models[name]
        assert issubclass(cls, KGModel) and cls.name == name
        assert cls.description and "\n" not in cls.description
        assert issubclass(cls.hyperparameters, Hyperparameters)
        assert dataclasses.is_dataclass(cls.hyperparameters)
        assert cls.training_mode == "1-n"


def test_plugins_import_only_the_contract_from_kgserver() -> None:
    for path in PLUGINS_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                if module == "kgserver" or module.startswith("kgserver."):
                    assert module == "kgserver.registry", f"{path.name} imports {module}"


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("overrides", VARIANTS, ids=["default", "distmult", "complex", "deep"])
def test_forward_backward_gives_finite_gradients_everywhere(
    build_model: Callable[..., KGModel], name: str, overrides: dict, graph: dgl.DGLGraph
) -> None:
    model = build_model(name, **overrides)
    model.train()
    entities, relations = model.encode(graph)
    assert entities.shape == (NUM_ENTITIES, 16)
    assert relations.shape == (2 * NUM_RELATIONS, 16)
    heads = torch.arange(2 * NUM_RELATIONS)
    scores = model.score(entities[heads], relations, entities)
    assert scores.shape == (2 * NUM_RELATIONS, NUM_ENTITIES)
    torch.nn.functional.binary_cross_entropy_with_logits(scores, torch.rand_like(scores)).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{parameter_name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{parameter_name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{parameter_name} has an all-zero gradient"


def permuted(graph: dgl.DGLGraph, permutation: torch.Tensor, edge_order: torch.Tensor) -> dgl.DGLGraph:
    """``graph`` with node ``i`` renamed ``permutation[i]`` and its edges listed in ``edge_order``."""
    src, dst = graph.edges()
    relabelled = dgl.graph((permutation[src[edge_order]], permutation[dst[edge_order]]), num_nodes=graph.num_nodes())
    relabelled.edata["rel"] = graph.edata["rel"][edge_order]
    return relabelled


@pytest.mark.parametrize("name", BUILT_IN)
def test_encoder_is_permutation_equivariant(
    build_model: Callable[..., KGModel], name: str, graph: dgl.DGLGraph
) -> None:
    model = build_model(name, num_layers=2, residual=True).eval()
    generator = torch.Generator().manual_seed(1)
    permutation = torch.randperm(NUM_ENTITIES, generator=generator)
    edge_order = torch.randperm(graph.num_edges(), generator=generator)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.entity_embedding[permutation] = model.entity_embedding
        entities, relations = model.encode(graph)
        twin_entities, twin_relations = twin.encode(permuted(graph, permutation, edge_order))
    torch.testing.assert_close(twin_entities[permutation], entities)
    torch.testing.assert_close(twin_relations, relations)
    # The relabelling must matter: without permuting the inputs the outputs differ.
    assert not torch.allclose(twin_entities, entities)


@pytest.mark.parametrize("name", BUILT_IN)
def test_residual_encoder_starts_as_plain_embeddings_and_learns_its_gates(name: str, graph: dgl.DGLGraph) -> None:
    cls = get_model(name)
    torch.manual_seed(0)
    plain = {"embedding_dim": 16, "dropout": 0.0, "unseen_entity_rate": 0.0}  # no input masked while training
    model = cls(NUM_ENTITIES, NUM_RELATIONS, cls.hyperparameters.from_dict(plain))
    assert model.hparams.residual and torch.equal(model.residual_gates, torch.zeros(1))
    entities, relations = model.encode(graph)
    torch.testing.assert_close(entities, model.entity_embedding)
    model.score(entities[: len(relations)], relations, entities).logsumexp(dim=1).sum().backward()
    assert model.residual_gates.grad.abs().sum() > 0  # the gates open as training finds the neighbourhood useful


@pytest.mark.parametrize("name", BUILT_IN)
def test_blocks_with_all_neighbours_match_the_full_graph(
    build_model: Callable[..., KGModel], name: str, graph: dgl.DGLGraph
) -> None:
    model = build_model(name, num_layers=2, residual=True).eval()
    seeds = torch.tensor([3, 17, 0, 25, 9])
    sampler = dgl.dataloading.NeighborSampler([-1, -1])
    _, output_nodes, blocks = sampler.sample_blocks(graph, seeds)
    with torch.no_grad():
        full_entities, full_relations = model.encode(graph)
        block_entities, block_relations = model.encode(blocks)
    assert torch.equal(output_nodes, seeds)
    torch.testing.assert_close(block_entities, full_entities[blocks[-1].dstdata[dgl.NID]])
    torch.testing.assert_close(block_relations, full_relations)


@pytest.mark.parametrize("name", BUILT_IN)
def test_edge_dropout_only_acts_in_training(
    build_model: Callable[..., KGModel], name: str, graph: dgl.DGLGraph
) -> None:
    model = build_model(name, edge_dropout=0.5, dropout=0.0)
    model.train()
    torch.manual_seed(0)
    first, _ = model.encode(graph)
    second, _ = model.encode(graph)
    assert not torch.allclose(first, second), "DropEdge should thin the graph differently each pass"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode(graph)[0], model.encode(graph)[0])


@pytest.mark.parametrize("name", BUILT_IN)
def test_sampled_blocks_train_with_edge_dropout(
    build_model: Callable[..., KGModel], name: str, graph: dgl.DGLGraph
) -> None:
    model = build_model(name, num_layers=2, edge_dropout=0.3).train()
    _, _, blocks = dgl.dataloading.NeighborSampler([4, 4]).sample_blocks(graph, torch.arange(8))
    entities, relations = model.encode(blocks)
    assert entities.shape == (8, 16)
    model.score(entities, relations[:8], entities).sum().backward()
    assert model.entity_embedding.grad is not None


def test_compgcn_updates_relations_and_rgcn_keeps_them(
    build_model: Callable[..., KGModel], graph: dgl.DGLGraph
) -> None:
    for name, updates in (("compgcn", True), ("rgcn", False), ("gatv2", False)):
        model = build_model(name).eval()
        with torch.no_grad():
            _, relations = model.encode(graph)
        assert torch.equal(relations, model.relation_embedding) is not updates, name


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("rgcn", {"regularizer": "bdd", "num_bases": 4}),
        ("compgcn", {"composition": "sub"}),
        ("compgcn", {"composition": "mult"}),
        ("gatv2", {"num_heads": 2, "attention_dropout": 0.1}),
    ],
)
def test_variants_train(build_model: Callable[..., KGModel], name: str, overrides: dict, graph: dgl.DGLGraph) -> None:
    model = build_model(name, **overrides).train()
    entities, relations = model.encode(graph)
    model.score(entities[:4], relations[:4], entities).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "name, assignment, message",
    [
        ("rgcn", "decoder=transe", "unknown decoder"),
        ("rgcn", "regularizer=full", "regularizer must be one of"),
        ("compgcn", "composition=add", "composition must be one of"),
        ("gatv2", "num_heads=3", "num_heads 3"),
        ("gatv2", "attention_dim=6", "attention_dim 6"),
        ("compgcn", "edge_dropout=1.0", "edge_dropout must be in"),
        ("rgcn", "num_layers=0", "num_layers must be at least 1"),
        ("compgcn", "decoder=conve conve_height=7", "conve_height 7 must divide"),
    ],
)
def test_bad_hyperparameters_are_clear_errors(name: str, assignment: str, message: str) -> None:
    cls = available_models()[name]
    with pytest.raises(ValueError, match=message):
        cls.hyperparameters.parse_assignments(assignment.split())


def test_hyperparameters_parse_from_cli_assignments() -> None:
    cls = available_models()["gatv2"]
    hparams = cls.hyperparameters.parse_assignments(["residual=true", "num_heads=8", "decoder=distmult"])
    assert hparams.residual is True and hparams.num_heads == 8 and hparams.decoder == "distmult"
    assert cls.hyperparameters.from_dict(hparams.to_dict()) == hparams
