"""The server follows the store: new triples of a served model's graph reach answers.

A :class:`StoreWatcher` thread asks the store for the revision of each served
model's graph every ``refresh_seconds`` (one indexed query per graph; nothing else
happens when it has not moved). When it moved, :func:`~kgserver.serving.live.extended` builds a new
immutable :class:`ServedModel` from the old one plus the triples added since:

* the known-triple index includes them (``filter_known`` leaves them out);
* entities the model never saw are appended to the vocabulary (old ids unchanged)
  and get embeddings from the encoder over their neighbourhood, and known entities
  whose neighbourhood changed are re-encoded, both by
  :func:`kgserver.serving.live.reencode`, which re-encodes only the entities
  within the encoder's reach of the touched ones;
* triples of a relation the model never saw cannot be encoded: the relation is
  remembered, and asking about it answers NOT_FOUND saying retraining is needed.

The new state is swapped in through :meth:`ModelHolder.replace`, exactly like a
version swap: a request uses the one state it fetched from start to end, so no
answer mixes two revisions, and every answer carries the revision it came from.
A graph deleted and imported again (its creation time changed) is another graph:
the version is rebuilt from it as it is now, as at start-up, and swapped in the same way.
"""

from __future__ import annotations

import logging
import threading
import time

from kgserver.serving.holder import ModelHolder
from kgserver.serving.live import Reencoder, extended
from kgserver.serving.served import ServedModel
from kgserver.serving.source import GraphFollower

log = logging.getLogger(__name__)


class StoreWatcher:
    """Checks the store every ``refresh_seconds`` and swaps in extended states (see the module doc)."""

    def __init__(
        self,
        holder: ModelHolder,
        store_url: str,
        refresh_seconds: float,
        reencode: Reencoder | None,
    ) -> None:
        """``reencode``: usually :func:`kgserver.serving.live.reencode`.

        None treats every new entity as not embeddable.
        """
        self.holder = holder
        self.refresh_seconds = refresh_seconds
        self._follower = GraphFollower(store_url)
        self._reencode = reencode
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing: dict[str, str] = {}  # graph -> last failure, logged once per streak

    def check_once(self) -> list[int]:
        """Follow every served model's graph once; returns the revisions swapped in."""
        swapped = []
        for served in self.holder.current():
            if not served.graph:
                continue
            try:
                updated = self._follow(served)
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
                if self._failing.get(served.graph) != reason:
                    log.error("%s: cannot follow graph %r (%s); still serving revision %d",
                              served.ref, served.graph, reason, served.store_revision)
                    log.debug("following %r failed", served.graph, exc_info=error)
                self._failing[served.graph] = reason
                continue
            self._failing.pop(served.graph, None)
            if updated is not None:
                swapped.append(updated.store_revision)
        return swapped

    def _follow(self, served: ServedModel) -> ServedModel | None:
        """Swap in ``served`` extended by what its graph gained, or rebuilt if the graph was
        imported again; the new state, or None when nothing changed or ``served`` was
        swapped out meanwhile. Raises whatever reading, re-encoding or warming up raised."""
        state = self._follower.state(served.graph)
        if state.created_at == served.store_created_at:
            if state.revision == served.store_revision:
                return None
            started = time.perf_counter()
            changes = self._follower.changes(served.graph, served.store_revision)
            if changes.created_at == served.store_created_at:
                updated = extended(served, changes, self._reencode)
                if not self.holder.replace(served, updated):
                    return None
                log.info("%s: now at store revision %d (%d entities, %d new since training; read, "
                         "re-encoded and warmed in %.2f s)", served.ref, updated.store_revision,
                         updated.num_entities, updated.num_entities - updated.trained_entities,
                         time.perf_counter() - started)
                return updated
        rebuilt = self.holder.rebuild(served)  # another life of the graph: start from it as it is
        if rebuilt is not None:
            log.warning("%s: graph %r was deleted and imported again; rebuilt from it at revision %d",
                        served.ref, served.graph, rebuilt.store_revision)
        return rebuilt

    def start(self) -> None:
        """Check in a daemon thread until :meth:`stop`."""
        if self.refresh_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="kgserver-store-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._follower.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.check_once()
