"""The :class:`Snapshot`: everything training and serving need from a stored graph.

A snapshot is plain data. It is read from the store once; training and serving
never query SQL inside a loop. Ids are positions in ``entities``/``relations``
(IRIs in id order), which is the vocabulary saved with every model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dgl
import torch
from torch import Tensor


@dataclass
class Snapshot:
    """A graph's id maps and its train/valid/test triples as ``[n, 3]`` int64 tensors.

    ``train`` alone feeds the message-passing graph; ``valid`` and ``test`` are
    only ever prediction targets, so they cannot leak into a model's input.
    """

    name: str
    entities: list[str]
    relations: list[str]
    train: Tensor
    valid: Tensor
    test: Tensor
    metadata: dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_store(
        cls,
        store: Any,
        graph_name: str,
        *,
        include_literals: bool = False,
        split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> "Snapshot":
        """Read ``graph_name`` from ``store``; see :mod:`kgserver.graph.from_store` for the split rules."""
        from kgserver.graph.from_store import snapshot_from_store

        return snapshot_from_store(
            store, graph_name, include_literals=include_literals, split_ratio=split_ratio, seed=seed
        )

    def fingerprint(self) -> dict[str, object]:
        """Name, sizes and sha256 of vocabularies + id-mapped triples, for run tracking."""
        from kgserver.graph.from_store import fingerprint

        return fingerprint(self)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    def message_graph(self) -> dgl.DGLGraph:
        """The training edges plus their inverses (relation ``r + R``) as a DGL graph.

        Edge ``i`` (``i < n``) is train triple ``i``; edge ``i + n`` is its inverse,
        which is the layout DGL's ``exclude="reverse_id"`` expects.
        """
        return message_graph(self.train, self.num_entities, self.num_relations)


def message_graph(triples: Tensor, num_entities: int, num_relations: int) -> dgl.DGLGraph:
    """Build the message-passing graph of ``triples`` with inverse edges appended."""
    heads, rels, tails = triples[:, 0], triples[:, 1], triples[:, 2]
    graph = dgl.graph(
        (torch.cat([heads, tails]), torch.cat([tails, heads])), num_nodes=num_entities
    )
    graph.edata["rel"] = torch.cat([rels, rels + num_relations])
    return graph
