"""Encoding a large graph chunk by chunk of entities gives the whole-graph embeddings."""

from __future__ import annotations

import pytest
import torch

from kgserver.graph import Snapshot, encoding
from kgserver.graph.encoding import encode_in_chunks
from kgserver.registry import get_model
from kgserver.training import seed_everything


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
@pytest.mark.parametrize("layers", [1, 2])
def test_chunks_give_the_whole_graph_embeddings(
    plugin: str, layers: int, mirrored: Snapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_everything(0)
    cls = get_model(plugin)
    hparams = cls.hyperparameters.parse_assignments(["embedding_dim=16", f"num_layers={layers}"])
    model = cls(mirrored.num_entities, mirrored.num_relations, hparams).eval()
    graph = mirrored.message_graph()
    with torch.no_grad():
        whole_entities, whole_relations = model.encode(graph)
        # about 40 edges' worth of numbers per chunk: the 64 entities are encoded in many chunks
        monkeypatch.setattr(encoding, "EDGE_ELEMENTS", 40 * 16)
        calls: list[int] = []
        original = model.encode
        monkeypatch.setattr(model, "encode", lambda g, *a: calls.append(1) or original(g, *a))
        entities, relations = encode_in_chunks(model, graph)
    assert len(calls) > 4  # really chunked
    torch.testing.assert_close(entities, whole_entities, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(relations, whole_relations)


def test_small_graphs_are_encoded_whole(mirrored: Snapshot) -> None:
    cls = get_model("compgcn")
    model = cls(mirrored.num_entities, mirrored.num_relations, cls.hyperparameters.parse_assignments([])).eval()
    graph = mirrored.message_graph()
    with torch.no_grad():
        entities, _ = encode_in_chunks(model, graph)
        torch.testing.assert_close(entities, model.encode(graph)[0], rtol=0, atol=0)
