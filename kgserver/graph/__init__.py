"""Graph snapshots: a graph from the store as plain tensors and a DGL graph."""

from kgserver.graph.snapshot import Snapshot

__all__ = ["Snapshot"]
