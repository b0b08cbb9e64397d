"""Where served models come from, and the one place serving reads the store.

:func:`registry_source` returns the two functions the holder needs:
``resolve(ref)`` names the version a reference points at now (MLflow registry or
a bundle path, via :mod:`kgserver.models`), ``build(ref, version)`` loads exactly
that version and prepares it for serving. Loading by the resolved version (not by
the alias again) means an alias that moves twice in quick succession cannot mix
versions.

Preparing a version is assembled here, from plain parts: the loaded model, and,
when serving runs with a store, the graph's stored triples mapped into the
model's vocabulary, its labels and the revision they were read at.
:class:`GraphFollower` is how :mod:`kgserver.serving.watcher` reads what the
store added since. :class:`~kgserver.serving.served.ServedModel` itself never
reads the store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kgserver.errors import ConfigurationError
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving.holder import Builder, Resolver
from kgserver.serving.served import LoadedModelLike, ServedModel


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


def served_model(ref: str, loaded: LoadedModelLike, store_url: str | None, language: str = "") -> ServedModel:
    """``loaded`` ready to serve under ``ref``.

    Its known triples are its training triples and, when ``store_url`` is given,
    every triple of the graph it was trained on as stored there now (validation,
    test and later imports included), with the graph's labels and the revision
    that was read.
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
        changes = follower.changes(loaded.graph_name, 0)
    stored, _ = vocabulary.map_triples(changes.triples, changes.vocabulary)
    return ServedModel.build(
        ref, loaded, also_known=stored, store_revision=changes.revision, labels=changes.labels, language=language
    )


@dataclass(frozen=True)
class GraphChanges:
    """What a graph gained after some revision, up to ``revision``: ``triples`` (``[n, 3]``
    int64 ids of ``vocabulary``, the entities and relations they use) and the graph's labels now."""

    revision: int
    vocabulary: Vocabulary
    triples: Tensor
    labels: dict[str, dict[str, str]]


class GraphFollower:
    """An open store for following graphs: a cheap revision check, and the changes since one.

    Holds one engine (pooled connection) for the life of the server, so checking a
    revision is one query on an open connection.
    """

    def __init__(self, store_url: str) -> None:
        from kgserver.store import open_store

        self._store = open_store(store_url)

    def revision(self, graph: str) -> int:
        """The graph's revision (:class:`~kgserver.errors.GraphNotFound` if it is gone)."""
        return self._store.revision(graph)

    def changes(self, graph: str, since: int) -> GraphChanges:
        """The triples added to ``graph`` after revision ``since`` (all of it for 0), and its labels."""
        stored = self._store.triples_since(graph, since)
        return GraphChanges(
            revision=stored.revision,
            vocabulary=Vocabulary(stored.entities, stored.relations),
            triples=torch.from_numpy(stored.triples).long().reshape(-1, 3),
            labels=self._store.labels_by_language(graph),
        )

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> GraphFollower:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
