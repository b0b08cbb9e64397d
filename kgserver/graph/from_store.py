"""Reading a :class:`~kgserver.graph.Snapshot` out of the store, and fingerprinting it.

The split is the stored one when the graph has one (triples imported with
``--split``); triples the import left unassigned then join the training set,
since they are known facts with no evaluation role. A graph with no stored split
at all gets a seeded random split. Either way only training triples reach the
message-passing graph, and every entity stays in the vocabulary even when all of
its triples landed in valid or test (it simply has no edges).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from kgserver.errors import ConfigurationError

if TYPE_CHECKING:
    from kgserver.graph.snapshot import Snapshot

TRAIN, VALID, TEST, UNASSIGNED = 0, 1, 2, -1
_SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


class StoredGraphLike(Protocol):
    """What :meth:`Store.read_graph` returns (see ``kgserver.store``)."""

    entities: list[str]
    relations: list[str]
    triples: np.ndarray
    splits: np.ndarray


class StoreLike(Protocol):
    def read_graph(self, name: str, include_literals: bool = False) -> StoredGraphLike: ...


def snapshot_from_store(
    store: StoreLike,
    graph_name: str,
    *,
    include_literals: bool = False,
    split_ratio: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> "Snapshot":
    """Read ``graph_name`` and split it (stored split, else seeded random ``split_ratio``)."""
    from kgserver.graph.snapshot import Snapshot

    stored = store.read_graph(graph_name, include_literals=include_literals)
    triples = np.asarray(stored.triples, dtype=np.int64).reshape(-1, 3)
    splits = np.asarray(stored.splits, dtype=np.int8)
    if len(splits) != len(triples):
        raise ValueError(f"graph {graph_name!r}: {len(triples)} triples but {len(splits)} split labels")
    if len(triples) == 0:
        raise ConfigurationError(f"graph {graph_name!r} has no triples to train on")
    if (splits != UNASSIGNED).any():
        assignment, origin = np.where(splits == UNASSIGNED, TRAIN, splits), "stored"
        unassigned = int((splits == UNASSIGNED).sum())
    else:
        assignment, origin, unassigned = random_split(len(triples), split_ratio, seed), "random", 0
    parts = {name: torch.from_numpy(triples[assignment == code]) for name, code in _SPLITS.items()}
    for name in ("train", "valid", "test"):
        if len(parts[name]) == 0:
            raise ConfigurationError(
                f"graph {graph_name!r} has no {name} triples in its {origin} split; "
                "import one with --split, or import the graph without splits for a random one"
            )
    metadata: dict[str, Any] = {
        "split": origin,
        "include_literals": include_literals,
        "unassigned_in_train": unassigned,
    }
    if origin == "random":
        metadata.update(split_ratio=list(split_ratio), split_seed=seed)
    return Snapshot(
        name=graph_name,
        entities=list(stored.entities),
        relations=list(stored.relations),
        metadata=metadata,
        **parts,
    )


def random_split(count: int, ratio: tuple[float, float, float], seed: int) -> np.ndarray:
    """A split label per triple: a seeded permutation cut by ``ratio`` (normalised)."""
    if len(ratio) != 3 or any(part < 0 for part in ratio) or sum(ratio) <= 0:
        raise ConfigurationError(f"split ratio must be three non-negative numbers, got {ratio}")
    fractions = np.asarray(ratio, dtype=np.float64) / sum(ratio)
    n_train, n_valid = (np.round(np.cumsum(fractions[:2]) * count)).astype(np.int64)
    order = np.random.default_rng(seed).permutation(count)
    labels = np.empty(count, dtype=np.int8)
    labels[order[:n_train]] = TRAIN
    labels[order[n_train:n_valid]] = VALID
    labels[order[n_valid:]] = TEST
    return labels


def fingerprint(snapshot: "Snapshot") -> dict[str, Any]:
    """Name, sizes and a sha256 over vocabularies and id-mapped triples of every split.

    Two snapshots with the same digest train and evaluate on exactly the same
    data with the same ids, which is what a tracked run needs to record.
    """
    digest = hashlib.sha256()
    for vocabulary in (snapshot.entities, snapshot.relations):
        digest.update(len(vocabulary).to_bytes(8, "little"))
        digest.update("\n".join(vocabulary).encode("utf-8"))
    for part in (snapshot.train, snapshot.valid, snapshot.test):
        array = part.detach().cpu().to(torch.int64).contiguous().numpy().astype("<i8", copy=False)
        digest.update(len(array).to_bytes(8, "little"))
        digest.update(array.tobytes())
    return {
        "name": snapshot.name,
        "num_entities": snapshot.num_entities,
        "num_relations": snapshot.num_relations,
        "num_train": len(snapshot.train),
        "num_valid": len(snapshot.valid),
        "num_test": len(snapshot.test),
        "sha256": digest.hexdigest(),
    }
