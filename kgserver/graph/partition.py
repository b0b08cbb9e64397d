"""Partition a snapshot's message graph into DGL's distributed layout (``dgl.distributed``).

A graph whose training state does not fit one machine's memory is trained by
DGL's own distributed stack: ``dgl.distributed.partition_graph`` splits it into
parts (METIS by default: few edges cross parts, so little is fetched remotely),
each machine loads its part into a ``DistGraph``, and ``DistEdgeDataLoader``
samples the same neighbourhood blocks that ``--mode sampled`` trains on in one
process. This module writes that layout from a :class:`Snapshot`, so the graph a
distributed job reads is exactly the one ``kgserver train`` would have built:
message edges with their inverses and the relation id of each edge in
``edata["rel"]``.

Beside DGL's files the directory holds what DGL's layout does not:

- ``kgserver.json``: the graph's name and fingerprint (the one a tracked run
  records), the part count and method, and the DGL graph name to pass to
  ``DistGraph``;
- ``vocabulary.json``: entity and relation IRIs in the snapshot's id order;
- ``ids.safetensors``: ``entity_ids`` and ``edge_ids`` map DGL's reshuffled ids
  back to the snapshot's (DGL renumbers nodes and edges part by part),
  ``reverse_edge_ids`` gives each edge's inverse in DGL's ids (for a sampler's
  ``exclude="reverse_id"``), and the ``valid`` and ``test`` triples, which are
  never message edges.

:func:`plugin_blocks` turns the blocks a ``DistGraph``'s samplers yield into the
blocks the plugins encode in ``--mode sampled``, so the models need no change.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import Tensor

from kgserver.errors import ConfigurationError
from kgserver.graph.snapshot import Snapshot

METHODS = ("metis", "random")
MANIFEST = "kgserver.json"
VOCABULARY = "vocabulary.json"
IDS = "ids.safetensors"


@dataclass(frozen=True)
class Partitioning:
    """Where a snapshot's partitions were written, and how."""

    directory: Path
    dgl_graph_name: str
    parts: int
    method: str
    entities: int
    message_edges: int
    cut_edges: int
    seconds: float

    @property
    def partition_config(self) -> Path:
        """DGL's partition configuration: the ``part_config`` of ``DistGraph`` and DGL's launcher."""
        return self.directory / f"{self.dgl_graph_name}.json"

    def summary(self) -> dict[str, object]:
        return {
            "directory": str(self.directory),
            "partition_config": str(self.partition_config),
            "dgl_graph_name": self.dgl_graph_name,
            "parts": self.parts,
            "method": self.method,
            "entities": self.entities,
            "message_edges": self.message_edges,
            "cut_edges": self.cut_edges,
            "seconds": round(self.seconds, 3),
        }


def write_partitions(
    snapshot: Snapshot, parts: int, directory: Path, *, method: str = "metis", seed: int = 0
) -> Partitioning:
    """Partition ``snapshot``'s message graph into ``parts`` parts under ``directory`` (new or empty).

    Raises :class:`ConfigurationError`, writing nothing, for a part count outside
    ``1..entities`` or one DGL cannot fill, an unknown method, a graph without
    training triples, or a directory that already holds files or cannot be
    created. If writing fails part-way, what was written is removed.
    """
    check_request(parts, directory, method)
    if parts > snapshot.num_entities:
        raise ConfigurationError(
            f"--parts must be between 1 and the graph's {snapshot.num_entities:,} entities, got {parts}"
        )
    if len(snapshot.train) == 0:
        raise ConfigurationError(f"graph {snapshot.name!r} has no training triples to partition")
    missing = [folder for folder in (directory, *directory.parents) if not folder.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"cannot create {directory}: {error.strerror}") from None
    try:
        return _write(snapshot, parts, directory, method, seed)
    except BaseException:
        # a partial layout could pass for a whole one: leave the file system as it was found
        if missing:
            shutil.rmtree(missing[-1])
        else:
            for child in directory.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        raise


def check_request(parts: int, directory: Path, method: str) -> None:
    """What can be checked before the graph is read: a positive part count, a known method,
    and an output directory that is new or empty."""
    if method not in METHODS:
        raise ConfigurationError(f"unknown partition method {method!r}; choose one of {', '.join(METHODS)}")
    if parts < 1:
        raise ConfigurationError(f"--parts must be at least 1, got {parts}")
    try:
        used = directory.exists() and (not directory.is_dir() or any(directory.iterdir()))
    except OSError as error:
        raise ConfigurationError(f"cannot read {directory}: {error.strerror}") from None
    if used:
        raise ConfigurationError(f"{directory} already exists and is not an empty directory; choose a new one")


def _write(snapshot: Snapshot, parts: int, directory: Path, method: str, seed: int) -> Partitioning:
    """DGL's partitions, then the id maps and vocabulary, and the manifest last."""
    import dgl
    import dgl.distributed

    started = time.monotonic()
    graph = snapshot.message_graph()
    # DGL writes its configuration as NAME.json: the prefix keeps it clear of kgserver's own files
    dgl_graph_name = "g_" + re.sub(r"[^A-Za-z0-9_.-]", "_", snapshot.name)
    dgl.seed(seed)
    try:
        with _stdout_to_stderr():  # DGL's partitioner reports on stdout
            entity_ids, edge_ids = dgl.distributed.partition_graph(
                graph,
                dgl_graph_name,
                parts,
                str(directory),
                part_method=method,
                balance_edges=True,
                return_mapping=True,
            )
    except (dgl.DGLError, IndexError) as error:  # a part left without nodes or edges
        first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ConfigurationError(
            f"DGL could not split graph {snapshot.name!r} ({snapshot.num_entities:,} entities, "
            f"{graph.num_edges():,} message edges) into {parts} {method} parts that each hold nodes and edges; "
            f"use fewer parts ({first_line})"
        ) from None
    save_file(
        {
            "entity_ids": entity_ids.contiguous(),
            "edge_ids": edge_ids.contiguous(),
            "reverse_edge_ids": _reverse_edge_ids(edge_ids, len(snapshot.train)),
            "valid": snapshot.valid.contiguous(),
            "test": snapshot.test.contiguous(),
        },
        str(directory / IDS),
    )
    (directory / VOCABULARY).write_text(
        json.dumps({"entities": snapshot.entities, "relations": snapshot.relations}), encoding="utf-8"
    )
    partitioning = Partitioning(
        directory=directory,
        dgl_graph_name=dgl_graph_name,
        parts=parts,
        method=method,
        entities=snapshot.num_entities,
        message_edges=graph.num_edges(),
        cut_edges=_cut_edges(graph, entity_ids, directory / f"{dgl_graph_name}.json"),
        seconds=time.monotonic() - started,
    )
    manifest = {
        "graph": snapshot.name,
        "fingerprint": snapshot.fingerprint(),
        "num_relations": snapshot.num_relations,
        "inverse_relation_offset": snapshot.num_relations,
        **partitioning.summary(),
    }
    del manifest["directory"], manifest["partition_config"]
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return partitioning


def _reverse_edge_ids(edge_ids: Tensor, train_triples: int) -> Tensor:
    """Each edge's inverse in DGL's edge ids (``edge_ids[new] = old``): what ``exclude="reverse_id"``
    needs, since the snapshot's layout (edge ``i``'s inverse is ``i + n``) does not survive the
    renumbering."""
    import torch

    new_ids = torch.empty_like(edge_ids)
    new_ids[edge_ids] = torch.arange(len(edge_ids))
    return new_ids[(edge_ids + train_triples) % (2 * train_triples)].contiguous()


def _cut_edges(graph: Any, entity_ids: Tensor, partition_config: Path) -> int:
    """Message edges whose ends lie in different parts: each is a remote fetch when sampled.

    DGL renumbers nodes so that each part holds one contiguous range (the config's
    ``node_map``); ``entity_ids[new] = old``.
    """
    import torch

    (ranges,) = json.loads(partition_config.read_text(encoding="utf-8"))["node_map"].values()
    ends = torch.tensor([end for _, end in ranges])
    new_ids = torch.empty_like(entity_ids)
    new_ids[entity_ids] = torch.arange(len(entity_ids))
    part_of = torch.searchsorted(ends, new_ids, right=True)
    sources, destinations = graph.edges()
    return int((part_of[sources] != part_of[destinations]).sum())


def plugin_blocks(dist_graph: Any, blocks: list[Any], entity_ids: Tensor) -> list[Any]:
    """Blocks sampled from a ``DistGraph`` of these partitions, made ready for a plugin's ``encode``.

    DGL's distributed samplers number nodes and edges part by part and leave edge
    features on the ``DistGraph``; a plugin reads the first block's source entities
    (``srcdata[dgl.NID]``, the rows of its embedding table, in the snapshot's ids)
    and each edge's relation (``edata["rel"]``). Both are filled in on the blocks
    themselves (and the destinations' ids mapped too), from ``ids.safetensors``'s
    ``entity_ids`` and the graph's ``rel``: call it once per sampled batch.
    """
    import dgl

    for block in blocks:
        block.srcdata[dgl.NID] = entity_ids[block.srcdata[dgl.NID]]
        block.dstdata[dgl.NID] = entity_ids[block.dstdata[dgl.NID]]
        block.edata["rel"] = dist_graph.edata["rel"][block.edata[dgl.EID]]
    return blocks


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send Python's and the C libraries' stdout to stderr, so a command's stdout keeps its result."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio's buffered output goes where it was written
        os.dup2(saved, 1)
        os.close(saved)
