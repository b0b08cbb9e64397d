"""``kgserver partition``: a snapshot in dgl.distributed's layout, read back by DGL's own loader."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kgserver.errors import ConfigurationError
from kgserver.graph import Snapshot
from kgserver.graph.partition import IDS, MANIFEST, VOCABULARY, plugin_blocks, write_partitions
from kgserver.registry import get_model

from .conftest import mirrored_snapshot
from .test_cli import SMALL, import_toy, kgserver


def _edges_read_back(partitioning_dir: Path, config: Path, parts: int) -> tuple[set[tuple[int, int, int]], int]:
    """Every part's own edges as (source, rel, destination) in the snapshot's ids, and how many
    of them come from another part's node (a halo node of the part)."""
    import dgl.distributed

    ids = load_file(str(partitioning_dir / IDS))
    entity_ids = ids["entity_ids"]
    edges: set[tuple[int, int, int]] = set()
    from_halo = 0
    for part in range(parts):
        graph, _, edge_feats, book, *_ = dgl.distributed.load_partition(str(config), part)
        inner = graph.edata["inner_edge"].bool()
        from_halo += int((~graph.ndata["inner_node"].bool()[graph.edges()[0][inner]]).sum())
        sources, destinations = graph.edges()
        global_sources = graph.ndata[dgl.NID][sources[inner]]
        global_destinations = graph.ndata[dgl.NID][destinations[inner]]
        (rel_key,) = [key for key in edge_feats if key.endswith("/rel")]
        rels = edge_feats[rel_key]
        assert len(rels) == int(inner.sum())
        # the part's feature rows follow its inner edges' global (reshuffled) ids in order
        order = torch.argsort(graph.edata[dgl.EID][inner])
        for source, rel, destination in zip(
            entity_ids[global_sources[order]].tolist(),
            rels.tolist(),
            entity_ids[global_destinations[order]].tolist(),
            strict=True,
        ):
            edges.add((source, rel, destination))
        assert book.num_partitions() == parts
    return edges, from_halo


@pytest.mark.parametrize(("parts", "method"), [(2, "metis"), (3, "random")])
def test_partitions_hold_exactly_the_message_graph(tmp_path: Path, parts: int, method: str) -> None:
    snapshot = mirrored_snapshot()
    out = tmp_path / "parts"
    partitioning = write_partitions(snapshot, parts, out, method=method)

    graph = snapshot.message_graph()
    sources, destinations = graph.edges()
    expected = set(zip(sources.tolist(), graph.edata["rel"].tolist(), destinations.tolist(), strict=True))
    edges, from_halo = _edges_read_back(out, partitioning.partition_config, parts)
    assert edges == expected
    assert partitioning.cut_edges == from_halo
    assert 0 < partitioning.cut_edges < graph.num_edges()

    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["fingerprint"] == snapshot.fingerprint()
    assert (manifest["parts"], manifest["method"], manifest["dgl_graph_name"]) == (parts, method, "mirrored")
    vocabulary = json.loads((out / VOCABULARY).read_text())
    assert (vocabulary["entities"], vocabulary["relations"]) == (snapshot.entities, snapshot.relations)
    ids = load_file(str(out / IDS))
    assert torch.equal(ids["valid"], snapshot.valid) and torch.equal(ids["test"], snapshot.test)
    assert sorted(ids["entity_ids"].tolist()) == list(range(snapshot.num_entities))
    assert sorted(ids["edge_ids"].tolist()) == list(range(graph.num_edges()))


@pytest.mark.parametrize(
    ("parts", "method", "message"),
    [
        (0, "metis", "--parts must be between 1 and the graph's 64 entities, got 0"),
        (65, "metis", "got 65"),
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
    full-neighbour blocks from ``DistNodeDataLoader``, and a plugin's unchanged ``encode``."""
    import dgl
    import dgl.distributed

    snapshot = mirrored_snapshot()
    partitioning = write_partitions(snapshot, 1, tmp_path / "parts")  # standalone mode reads one part
    entity_ids = load_file(str(tmp_path / "parts" / IDS))["entity_ids"]
    cls = get_model(plugin)
    torch.manual_seed(0)
    model = cls(snapshot.num_entities, snapshot.num_relations, cls.hyperparameters.parse_assignments(SMALL)).eval()
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
    out = tmp_path / "parts"
    if existing:
        out.mkdir()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    # after DGL wrote its partitions, before the id maps
    monkeypatch.setattr("kgserver.graph.partition.save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_partitions(mirrored_snapshot(), 2, out)
    assert (list(out.iterdir()) == []) if existing else not out.exists()
