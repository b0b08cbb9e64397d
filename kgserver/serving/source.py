"""Where served models come from, and the one place serving reads the store.

:func:`registry_source` returns the two functions the holder needs:
``resolve(ref)`` names the version a reference points at now (MLflow registry or
a bundle path, via :mod:`kgserver.models`), ``build(ref, version)`` loads exactly
that version and prepares it for serving. Loading by the resolved version (not by
the alias again) means an alias that moves twice in quick succession cannot mix
versions.

Preparing a version is assembled here, from plain parts: the loaded model, and,
when serving runs with a store, the graph's stored triples (known, and what was
imported since training extending the model as the watcher would), its labels and
the revision they were read at.
:class:`GraphFollower` is how :mod:`kgserver.serving.watcher` reads what the
store added since. :class:`~kgserver.serving.served.ServedModel` itself never
reads the store.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import Tensor

from kgserver.errors import ConfigurationError
from kgserver.graph.index import rows_in
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving import live
from kgserver.serving.holder import Builder, Resolver
from kgserver.serving.live import GraphChanges, Reencoder
from kgserver.serving.served import LoadedModelLike, ServedModel
from kgserver.store import GraphState

log = logging.getLogger(__name__)


def registry_source(
    tracking_uri: str | None, store_url: str | None, language: str = ""
) -> tuple[Resolver, Builder]:
    """``(resolve, build)`` over the tracking store at ``tracking_uri`` and the store at
    ``store_url``; answers carry labels in ``language`` unless a request names another."""
    from kgserver import models

    def resolve(ref: str) -> str:
        return models.resolve(ref, tracking_uri=tracking_uri)

    def build(ref: str, version: str) -> ServedModel:
        return served_model(ref, models.load(version, tracking_uri=tracking_uri), store_url, language)

    return resolve, build


def served_model(
    ref: str,
    loaded: LoadedModelLike,
    store_url: str | None,
    language: str = "",
    reencode: Reencoder | None = live.reencode,
) -> ServedModel:
    """``loaded`` ready to serve under ``ref``.

    Without a store its known triples are its training triples. With ``store_url``
    it serves the graph it was trained on as stored there now, starting exactly as the
    store watcher continues (:func:`kgserver.serving.live.extended`), so an entity
    imported between training and ``serve`` answers like one imported later:

    * what the store held when training read it (the bundle records that revision) is
      known: ``filter_known`` leaves it out; the message graph stays the training
      triples, as when the model was evaluated;
    * what was imported since is added: known, part of the message graph (valid and
      test splits excepted), new entities embedded from their neighbourhood by ``reencode``.

    A bundle that does not record the store state it was trained on, or a graph deleted
    and imported again since, cannot tell the two apart by revision: then every stored
    triple that is neither a training triple nor in a stored valid/test split counts as
    imported since (for a graph stored without a split, that includes the triples
    training held out at random; this is logged).
    """
    if store_url is None:
        return ServedModel.build(ref, loaded, language=language)
    if not loaded.graph_name:
        raise ConfigurationError(
            f"{loaded.version} does not record the graph it was trained on, "
            "so its known triples cannot be read from the store (drop --db)"
        )
    vocabulary = Vocabulary(loaded.entities, loaded.relations)
    with GraphFollower(store_url) as follower:
        state = follower.state(loaded.graph_name)
        same_life = bool(loaded.graph_created_at) and loaded.graph_created_at == state.created_at.isoformat()
        if same_life and loaded.graph_revision <= state.revision:
            known = follower.changes(loaded.graph_name, 0, upto=loaded.graph_revision)
            since = follower.changes(loaded.graph_name, loaded.graph_revision)
        else:
            log.info("%s: %s; every stored triple outside training and the stored valid/test splits "
                     "is served as imported since", ref,
                     "the graph was imported again since training" if loaded.graph_created_at
                     else "the bundle does not record the store revision training read")  # fmt: skip
            known = follower.changes(loaded.graph_name, 0)
            since = known
    recorded, _ = vocabulary.map_triples(known.triples, known.vocabulary)
    served = ServedModel.build(
        ref, loaded, also_known=recorded, store_revision=known.revision,
        store_created_at=known.created_at, labels=known.labels, language=language,
    )  # fmt: skip
    if since is known:  # by content: leave out the training triples themselves
        mapped = vocabulary.ids_of(since.triples, since.vocabulary)
        fresh = ~(rows_in(mapped, served.train_triples) & (mapped >= 0).all(dim=1))
        since = dataclasses.replace(since, triples=since.triples[fresh], held_out=_mask(since.held_out, fresh))
    return live.extended(served, since, reencode)


def _mask(held_out: Tensor | None, rows: Tensor) -> Tensor | None:
    return None if held_out is None else held_out[rows]


class GraphFollower:
    """An open store for following graphs: a cheap revision check, and the changes since one.

    Holds one engine (pooled connection) for the life of the server, so checking a
    revision is one query on an open connection.
    """

    def __init__(self, store_url: str) -> None:
        from kgserver.store import open_store

        self._store = open_store(store_url)

    def state(self, graph: str) -> GraphState:
        """The graph's revision and creation time (:class:`~kgserver.errors.GraphNotFound` if it is gone)."""
        return self._store.state(graph)

    def changes(self, graph: str, since: int, upto: int | None = None) -> GraphChanges:
        """The triples added to ``graph`` after revision ``since`` (all of it for 0; up to
        revision ``upto`` when given), which of them are in a stored valid or test split,
        and the graph's labels."""
        stored = self._store.triples_since(graph, since, upto=upto)
        return GraphChanges(
            revision=stored.revision,
            created_at=stored.created_at,
            vocabulary=Vocabulary(stored.entities, stored.relations),
            triples=torch.from_numpy(stored.triples).long().reshape(-1, 3),
            labels=self._store.labels_by_language(graph),
            held_out=torch.from_numpy(stored.splits >= 1),
        )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> GraphFollower:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
