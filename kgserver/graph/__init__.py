"""Graphs as plain data: vocabularies, triple indexes and snapshots of a stored graph.

:class:`Vocabulary` and :class:`TripleIndex` need torch only; :class:`Snapshot`
also builds DGL graphs. It is imported on first use, so that evaluation and
serving, which use the first two, do not load DGL through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kgserver.graph.index import TripleIndex
from kgserver.graph.vocabulary import Vocabulary

if TYPE_CHECKING:
    from kgserver.graph.snapshot import Snapshot

__all__ = ["Snapshot", "TripleIndex", "Vocabulary"]


def __getattr__(name: str) -> Any:
    if name == "Snapshot":
        from kgserver.graph.snapshot import Snapshot

        return Snapshot
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
