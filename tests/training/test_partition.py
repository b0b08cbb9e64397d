"""``kgserver partition``: a snapshot in dgl.distributed's layout, read back by DGL's own loader."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dgl
import pytest
import torch
from safetensors.torch import load_file

from kgserver.cli.training import PartitionMethod
from kgserver.errors import ConfigurationError
from kgserver.graph import Snapshot
from kgserver.graph.partition import IDS, MANIFEST, METHODS, VOCABULARY, plugin_blocks, write_partitions
from kgserver.registry import KGModel, get_model

from .conftest import mirrored_snapshot
from .test_cli import SMALL, import_toy, kgserver


def _small_model(plugin: str, snapshot: Snapshot) -> KGModel:
    cls = get_model(plugin)
    torch.manual_seed(0)
    return cls(snapshot.num_entities, snapshot.num_relations, cls.hyperparameters.parse_assignments(SMALL)).eval()


def _edges_read_back(directory: Path, config: Path, parts: int) -> tuple[dict[int, tuple[int, int, int]], int]:
    """Every part's own edges, keyed by the snapshot's message-edge id (through ``edge_ids``), as
    (source, rel, destination) in the snapshot's entity ids (through ``entity_ids``), and how
    many of them come from another part's node (a halo node of the part)."""
    import dgl.distributed

    ids = load_file(str(directory / IDS))
    entity_ids, edge_ids = ids["entity_ids"], ids["edge_ids"]
    edges: dict[int, tuple[int, int, int]] = {}
    from_halo = 0
    for part in range(parts):
        graph, _, edge_feats, book, *_ = dgl.distributed.load_partition(str(config), part)
        assert book.num_partitions() == parts
        inner = graph.edata["inner_edge"].bool()
        sources, destinations = (ends[inner] for ends in graph.edges())
        from_halo += int((~graph.ndata["inner_node"].bool()[sources]).sum())
        (rel_key,) = [key for key in edge_feats if key.endswith("/rel")]
        # the part's feature rows follow its inner edges' global (reshuffled) ids in order
        global_edges, order = torch.sort(graph.edata[dgl.EID][inner])
        rows = zip(
            edge_ids[global_edges].tolist(),
            entity_ids[graph.ndata[dgl.NID][sources[order]]].tolist(),
            edge_feats[rel_key].tolist(),
            entity_ids[graph.ndata[dgl.NID][destinations[order]]].tolist(),
            strict=True,
        )
        for edge, source, rel, destination in rows:
            assert edge not in edges, f"edge {edge} is in two parts"
            edges[edge] = (source, rel, destination)
    return edges, from_halo


@pytest.mark.parametrize(("parts", "method"), [(2, "metis"), (3, "random")])
def test_partitions_hold_exactly_the_message_graph(tmp_path: Path, parts: int, method: str) -> None:
    snapshot = mirrored_snapshot()
    out = tmp_path / "parts"
    partitioning = write_partitions(snapshot, parts, out, method=method)

    graph = snapshot.message_graph()
    sources, destinations = graph.edges()
    expected = dict(
        enumerate(zip(sources.tolist(), graph.edata["rel"].tolist(), destinations.tolist(), strict=True))
    )
    edges, from_halo = _edges_read_back(out, partitioning.partition_config, parts)
    assert edges == expected  # every message edge once, under its own id, with its relation
    assert partitioning.cut_edges == from_halo
    assert 0 < partitioning.cut_edges < graph.num_edges()

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["fingerprint"] == snapshot.fingerprint()
    assert (manifest["parts"], manifest["method"], manifest["dgl_graph_name"]) == (parts, method, "g_mirrored")
    vocabulary = json.loads((out / VOCABULARY).read_text())
    assert (vocabulary["entities"], vocabulary["relations"]) == (snapshot.entities, snapshot.relations)
    ids = load_file(str(out / IDS))
    assert torch.equal(ids["valid"], snapshot.valid) and torch.equal(ids["test"], snapshot.test)
    assert not torch.equal(ids["entity_ids"], torch.arange(snapshot.num_entities))  # DGL did renumber
    # each edge's inverse, in DGL's ids: the same pair of entities the other way round
    reverse = ids["reverse_edge_ids"]
    original = ids["edge_ids"]
    num_train = len(snapshot.train)
    assert torch.equal(original[reverse], (original + num_train) % (2 * num_train))
    assert torch.equal(reverse[reverse], torch.arange(graph.num_edges()))


def _permuted(graph: dgl.DGLGraph, seed: int) -> tuple[dgl.DGLGraph, torch.Tensor, torch.Tensor]:
    """``graph`` with its nodes and edges renumbered at random, as a DistGraph's are, without
    ``rel`` on its edges (a DistGraph keeps edge features apart); ``entity_ids[new] = old``; and
    the renumbered edges' relations."""
    generator = torch.Generator().manual_seed(seed)
    entity_ids = torch.randperm(graph.num_nodes(), generator=generator)
    edge_order = torch.randperm(graph.num_edges(), generator=generator)
    new_ids = torch.empty_like(entity_ids)
    new_ids[entity_ids] = torch.arange(len(entity_ids))
    sources, destinations = graph.edges()
    permuted = dgl.graph(
        (new_ids[sources[edge_order]], new_ids[destinations[edge_order]]), num_nodes=graph.num_nodes()
    )
    return permuted, entity_ids, graph.edata["rel"][edge_order]


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_plugin_blocks_map_renumbered_blocks_back(plugin: str) -> None:
    snapshot = mirrored_snapshot()
    model = _small_model(plugin, snapshot)
    graph = snapshot.message_graph()
    with torch.no_grad():
        whole, _ = model.encode(graph)
    permuted, entity_ids, rel = _permuted(graph, seed=1)
    edge_features = type("EdgeFeatures", (), {"edata": {"rel": rel}})()  # a DistGraph's edata
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(len(model.layers))
    encoded = torch.zeros_like(whole)
    for seeds in torch.arange(snapshot.num_entities).split(20):
        _, output_nodes, blocks = sampler.sample_blocks(permuted, seeds)
        assert "rel" not in blocks[0].edata
        blocks = plugin_blocks(edge_features, list(blocks), entity_ids)
        assert torch.equal(blocks[-1].dstdata[dgl.NID], entity_ids[seeds])
        with torch.no_grad():
            part, _ = model.encode(blocks)
        encoded[entity_ids[output_nodes]] = part
    torch.testing.assert_close(encoded, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("parts", "method", "message"),
    [
        (0, "metis", "--parts must be at least 1, got 0"),
        (65, "metis", "--parts must be between 1 and the graph's 64 entities, got 65"),
        (60, "metis", "DGL could not split graph 'mirrored' .* into 60 metis parts that each hold nodes and edges"),
        (60, "random", "into 60 random parts .*; use fewer parts"),
        (2, "spectral", "unknown partition method 'spectral'"),
    ],
)
def test_bad_requests_write_nothing(tmp_path: Path, parts: int, method: str, message: str) -> None:
    out = tmp_path / "parts"
    with pytest.raises(ConfigurationError, match=message):
        write_partitions(mirrored_snapshot(), parts, out, method=method)
    assert not out.exists()


def test_a_graph_without_training_triples_or_a_used_directory_is_refused(tmp_path: Path) -> None:
    snapshot = mirrored_snapshot()
    empty = Snapshot(
        snapshot.name, snapshot.entities, snapshot.relations, snapshot.train[:0], snapshot.valid, snapshot.test
    )
    with pytest.raises(ConfigurationError, match="no training triples"):
        write_partitions(empty, 2, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError, match="cannot create .*file/parts: Not a directory"):
        write_partitions(snapshot, 2, tmp_path / "file" / "parts")
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    with pytest.raises(ConfigurationError, match="not an empty directory"):
        write_partitions(snapshot, 2, used)
    assert [path.name for path in used.iterdir()] == ["keep.txt"]


def test_cli_partitions_an_imported_graph(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'store.db'}"
    import_toy(db_url, tmp_path)
    out = tmp_path / "parts"

    def partition(graph: str, directory: Path, *more: str) -> subprocess.CompletedProcess[str]:
        return kgserver(
            "partition", "--graph", graph, "--parts", "2", "--out", str(directory), "--db", db_url, *more, home=tmp_path
        )

    done = partition("toy", out, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout holds the JSON alone: DGL's reports went to stderr
    assert (summary["graph"], summary["parts"], summary["method"]) == ("toy", 2, "metis")
    assert Path(summary["partition_config"]).is_file()

    text = partition("toy", tmp_path / "random", "--method", "random")
    assert text.returncode == 0, text.stderr
    assert "in 2 random part(s)" in text.stdout and "between parts" in text.stdout

    again = partition("toy", out)
    assert again.returncode == 2 and "not an empty directory" in again.stderr
    assert "Traceback" not in again.stderr
    unknown = partition("nope", tmp_path / "n")
    assert unknown.returncode == 1 and "nope" in unknown.stderr
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_a_dist_graph_of_the_partitions_encodes_as_the_whole_graph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    """DGL's own distributed path, in its standalone mode: a ``DistGraph`` over the partitions,
    full-neighbour blocks from ``DistNodeDataLoader``, and a plugin's unchanged ``encode``.
    Standalone mode reads one part, whose ids DGL leaves as they were: the renumbering itself
    is what the test above covers."""
    import dgl.distributed

    snapshot = mirrored_snapshot()
    partitioning = write_partitions(snapshot, 1, tmp_path / "parts")
    entity_ids = load_file(str(tmp_path / "parts" / IDS))["entity_ids"]
    model = _small_model(plugin, snapshot)
    with torch.no_grad():
        whole, _ = model.encode(snapshot.message_graph())

    monkeypatch.setenv("DGL_DIST_MODE", "standalone")
    dgl.distributed.initialize("")
    dist_graph = dgl.distributed.DistGraph(partitioning.dgl_graph_name, part_config=str(partitioning.partition_config))
    assert (dist_graph.num_nodes(), dist_graph.num_edges()) == (snapshot.num_entities, 2 * len(snapshot.train))
    sampler = dgl.dataloading.MultiLayerFullNeighborSampler(len(model.layers))
    seeds = torch.arange(snapshot.num_entities)  # DistGraph ids: partition order
    loader = dgl.dataloading.DistNodeDataLoader(dist_graph, seeds, sampler, batch_size=20, shuffle=True)
    encoded = torch.zeros_like(whole)
    batches = 0
    for _, output_nodes, blocks in loader:
        with torch.no_grad():
            part, _ = model.encode(plugin_blocks(dist_graph, blocks, entity_ids))
        encoded[entity_ids[output_nodes]] = part
        batches += 1
    assert batches == 4
    torch.testing.assert_close(encoded, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_part_way_leaves_the_directory_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    out = tmp_path / "new" / "parts"  # both folders are created, so both go
    if existing:
        out.mkdir(parents=True)

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    # after DGL wrote its partitions, before the id maps
    monkeypatch.setattr("kgserver.graph.partition.save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_partitions(mirrored_snapshot(), 2, out)
    assert (list(out.iterdir()) == []) if existing else not (tmp_path / "new").exists()


def test_the_command_offers_the_methods_the_module_knows() -> None:
    assert tuple(method.value for method in PartitionMethod) == METHODS
