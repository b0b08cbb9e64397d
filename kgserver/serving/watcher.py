"""The server follows the store: new triples of a served model's graph reach answers.

A :class:`StoreWatcher` thread asks the store for the revision of each served
model's graph every ``refresh_seconds`` (one indexed query per graph; nothing else
happens when it has not moved). When it moved, :func:`extended` builds a new
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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from kgserver.errors import KGServerError
from kgserver.graph.index import TripleIndex
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving.holder import ModelHolder
from kgserver.serving.served import ServedModel
from kgserver.serving.source import GraphChanges, GraphFollower

log = logging.getLogger(__name__)

Reencoder = Callable[[ServedModel, Vocabulary, Tensor, Tensor], Tensor]
"""``reencode(served, vocabulary, message_triples, touched) -> entity embeddings`` for the
extended vocabulary (see :mod:`kgserver.serving.live`)."""


def extended(served: ServedModel, changes: GraphChanges, reencode: Reencoder | None) -> ServedModel:
    """``served`` plus the triples in ``changes``, at ``changes.revision`` (see the module doc)."""
    old = served.vocabulary
    names = changes.vocabulary
    heads = [names.entities[i] for i in changes.triples[:, 0].tolist()]
    relations = [names.relations[i] for i in changes.triples[:, 1].tolist()]
    tails = [names.entities[i] for i in changes.triples[:, 2].tolist()]
    unseen_relations = {r for r in relations if not old.has_relation(r)}
    usable = [i for i, r in enumerate(relations) if r not in unseen_relations]
    new_entities = list(
        dict.fromkeys(iri for i in usable for iri in (heads[i], tails[i]) if not old.has_entity(iri))
    )
    if reencode is not None:
        try:
            return _reencoded(served, changes, reencode, old.with_entities(new_entities),
                              (heads, relations, tails, usable), unseen_relations)  # fmt: skip
        except KGServerError as error:  # the plugin cannot embed unseen entities: its typed refusal
            log.warning("%s: %s; new entities will answer NOT_FOUND until the model is retrained", served.ref, error)
    # No re-encoding: new triples among known entities only extend the filter (the message
    # graph stays what the embeddings were computed from); new entities are not embeddable.
    among_known = [i for i in usable if old.has_entity(heads[i]) and old.has_entity(tails[i])]
    added = _id_triples(old, heads, relations, tails, among_known)
    known_triples = torch.cat([served.known_triples, added])
    return replace(
        served,
        known=TripleIndex.build(known_triples, old.num_relations) if len(added) else served.known,
        known_triples=known_triples,
        store_revision=changes.revision,
        labels=changes.labels,
        unembeddable=served.unembeddable | frozenset(new_entities),
        unseen_relations=served.unseen_relations | unseen_relations,
    )


def _id_triples(
    vocabulary: Vocabulary, heads: list[str], relations: list[str], tails: list[str], rows: list[int]
) -> Tensor:
    """The triples at ``rows`` of the three IRI columns, as ``[n, 3]`` ids of ``vocabulary``."""
    ids = [
        vocabulary.entity_ids([heads[i] for i in rows]),
        vocabulary.relation_ids([relations[i] for i in rows]),
        vocabulary.entity_ids([tails[i] for i in rows]),
    ]
    return torch.tensor(ids, dtype=torch.int64).T.reshape(-1, 3).contiguous()


def _reencoded(
    served: ServedModel,
    changes: GraphChanges,
    reencode: Reencoder,
    vocabulary: Vocabulary,
    named: tuple[list[str], list[str], list[str], list[int]],
    unseen_relations: set[str],
) -> ServedModel:
    """:func:`extended` with new entities appended (``vocabulary``) and the touched neighbourhoods re-encoded."""
    heads, relations, tails, usable = named
    added = _id_triples(vocabulary, heads, relations, tails, usable)
    known_triples = torch.cat([served.known_triples, added])
    message_triples = torch.cat([served.train_triples, added]) if len(added) else served.train_triples

    entity_emb = served.entity_emb
    if len(added):
        touched = torch.unique(torch.cat([added[:, 0], added[:, 2]]))
        with torch.inference_mode():
            entity_emb = reencode(served, vocabulary, message_triples, touched).detach().contiguous()
        if entity_emb.shape[0] != vocabulary.num_entities:
            raise RuntimeError(
                f"reencode returned {entity_emb.shape[0]} embeddings for {vocabulary.num_entities} entities"
            )
    new_entities = frozenset(vocabulary.entities[served.vocabulary.num_entities :])
    return replace(
        served,
        vocabulary=vocabulary,
        entity_emb=entity_emb,
        known=TripleIndex.build(known_triples, vocabulary.num_relations) if len(added) else served.known,
        known_triples=known_triples,
        train_triples=message_triples,
        store_revision=changes.revision,
        labels=changes.labels,
        unembeddable=served.unembeddable - new_entities,
        unseen_relations=served.unseen_relations | unseen_relations,
    )


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
                revision = self._follower.revision(served.graph)
                if revision == served.store_revision:
                    self._failing.pop(served.graph, None)
                    continue
                if revision < served.store_revision:
                    # The graph was deleted and imported again: its triples since are unknown.
                    raise KGServerError(
                        f"graph {served.graph!r} went back from revision {served.store_revision} to "
                        f"{revision} (deleted and imported again?); restart the server to reload it"
                    )
                changes = self._follower.changes(served.graph, served.store_revision)
                updated = extended(served, changes, self._reencode)
            except Exception as error:
                reason = f"{type(error).__name__}: {error}"
                if self._failing.get(served.graph) != reason:
                    log.error("%s: cannot follow graph %r (%s); still serving revision %d",
                              served.ref, served.graph, reason, served.store_revision)
                    log.debug("following %r failed", served.graph, exc_info=error)
                self._failing[served.graph] = reason
                continue
            self._failing.pop(served.graph, None)
            if self.holder.replace(served, updated):
                swapped.append(updated.store_revision)
                log.info("%s: now at store revision %d (%d entities, %d new since training)",
                         served.ref, updated.store_revision, updated.num_entities,
                         updated.num_entities - updated.trained_entities)
        return swapped

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
