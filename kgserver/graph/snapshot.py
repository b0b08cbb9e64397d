"""The :class:`Snapshot`: everything training and serving need from a stored graph.

A snapshot is plain data. It is read from the store once; training and serving
never query SQL inside a loop. Ids are positions in ``entities``/``relations``
(IRIs in id order), which is the vocabulary saved with every model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import dgl
import torch
from torch import Tensor

from kgserver.graph.from_store import StoreLike, split_triples
from kgserver.graph.vocabulary import Vocabulary


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
        store: StoreLike,
        graph_name: str,
        *,
        include_literals: bool = False,
        split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
    ) -> Snapshot:
        """Read ``graph_name`` from ``store``; see :mod:`kgserver.graph.from_store` for the split rules."""
        stored = store.read_graph(graph_name, include_literals=include_literals)
        parts, metadata = split_triples(
            stored, graph_name, include_literals=include_literals, split_ratio=split_ratio, seed=seed
        )
        metadata["store_revision"] = stored.revision  # where later imports start (live serving)
        if stored.created_at is not None:
            metadata["store_created_at"] = stored.created_at.isoformat()
        return cls(
            name=graph_name,
            entities=list(stored.entities),
            relations=list(stored.relations),
            metadata=metadata,
            **parts,
        )

    def fingerprint(self) -> dict[str, object]:
        """Name, sizes and a sha256 over vocabularies and id-mapped triples of every split.

        Two snapshots with the same digest train and evaluate on exactly the same
        data with the same ids, which is what a tracked run needs to record.
        """
        digest = hashlib.sha256()
        for vocabulary in (self.entities, self.relations):
            digest.update(len(vocabulary).to_bytes(8, "little"))
            digest.update("\n".join(vocabulary).encode("utf-8"))
        for part in (self.train, self.valid, self.test):
            array = part.detach().cpu().to(torch.int64).contiguous().numpy().astype("<i8", copy=False)
            digest.update(len(array).to_bytes(8, "little"))
            digest.update(array.tobytes())
        return {
            "name": self.name,
            "num_entities": self.num_entities,
            "num_relations": self.num_relations,
            "num_train": len(self.train),
            "num_valid": len(self.valid),
            "num_test": len(self.test),
            "sha256": digest.hexdigest(),
        }

    def vocabulary(self) -> Vocabulary:
        """The snapshot's entity and relation IRIs as a :class:`Vocabulary` (built on each call)."""
        return Vocabulary(self.entities, self.relations)

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
