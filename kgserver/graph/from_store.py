"""What a :class:`~kgserver.graph.Snapshot` needs of the store, and how a stored graph is split.

:meth:`Snapshot.from_store <kgserver.graph.Snapshot.from_store>` reads a graph
through the :class:`StoreLike` protocol (``kgserver.store.Store`` satisfies it;
this package does not import the store) and splits it with :func:`split_triples`.

The split is the stored one when the graph has one (triples imported with
``--split``); triples the import left unassigned then join the training set,
since they are known facts with no evaluation role. A graph with no stored split
at all gets a seeded random split. Either way only training triples reach the
message-passing graph, and every entity stays in the vocabulary even when all of
its triples landed in valid or test (it simply has no edges).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

import numpy as np
import torch

from kgserver.errors import ConfigurationError

TRAIN, VALID, TEST, UNASSIGNED = 0, 1, 2, -1
_SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


class StoredGraphLike(Protocol):
    """What :meth:`Store.read_graph` returns (see ``kgserver.store``)."""

    entities: list[str]
    relations: list[str]
    triples: np.ndarray
    splits: np.ndarray
    revision: int
    created_at: datetime | None


class StoreLike(Protocol):
    """The one store method a snapshot needs (see ``kgserver.store.Store``)."""

    def read_graph(self, name: str, include_literals: bool = False) -> StoredGraphLike: ...


def split_triples(
    stored: StoredGraphLike,
    graph_name: str,
    *,
    include_literals: bool,
    split_ratio: tuple[float, float, float],
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``stored``'s triples as ``train``/``valid``/``test`` tensors (stored split, else seeded random ``split_ratio``).

    Returns the three parts and the metadata that records how they were made.
    """
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
    return parts, metadata


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
