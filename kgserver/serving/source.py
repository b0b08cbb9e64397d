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
from kgserver.serving import live
from kgserver.serving.holder import Builder, Resolver
from kgserver.serving.live import GraphChanges, Reencoder, extended
from kgserver.serving.served import LoadedModelLike, ServedModel
from kgserver.store import GraphState


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
    it serves the graph it was trained on as stored there now: the stored triples of
    the graph's valid and test splits are known (``filter_known`` leaves them out);
    every other stored triple that is not a training triple is an addition since
    training and extends the model exactly as the store watcher extends it while
    serving (:func:`kgserver.serving.live.extended`: known, part of the message graph,
    new entities embedded from their neighbourhood by ``reencode``). So an entity
    imported between training and ``serve`` answers like one imported later.
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
        stored = follower.changes(loaded.graph_name, 0)
    held_out, _ = vocabulary.map_triples(stored.triples[stored.held_out], stored.vocabulary)
    served = ServedModel.build(
        ref, loaded, also_known=held_out, store_revision=stored.revision,
        store_created_at=stored.created_at, labels=stored.labels, language=language,
    )  # fmt: skip
    rest = stored.triples[~stored.held_out]
    added = ~_in_vocabulary_triples(rest, stored.vocabulary, vocabulary, served.train_triples)
    additions = GraphChanges(stored.revision, stored.created_at, stored.vocabulary, rest[added], stored.labels)
    return extended(served, additions, reencode)


def _in_vocabulary_triples(triples: Tensor, names: Vocabulary, vocabulary: Vocabulary, among: Tensor) -> Tensor:
    """Which of ``triples`` (ids of ``names``) are, in ``vocabulary``'s ids, among ``among``."""
    entity_map, relation_map = vocabulary.id_maps(names)
    heads, relations, tails = entity_map[triples[:, 0]], relation_map[triples[:, 1]], entity_map[triples[:, 2]]
    named = (heads >= 0) & (relations >= 0) & (tails >= 0)
    entities, num_relations = vocabulary.num_entities, vocabulary.num_relations

    def keys(h: Tensor, r: Tensor, t: Tensor) -> Tensor:
        return (h * num_relations + r) * entities + t

    among = among.long()
    return named & torch.isin(keys(heads, relations, tails), keys(among[:, 0], among[:, 1], among[:, 2]))


@dataclass(frozen=True)
class StoredChanges(GraphChanges):
    """:class:`~kgserver.serving.live.GraphChanges` as read from the store, with ``held_out``
    (bool ``[n]``): which triples the store keeps in a valid or test split."""

    held_out: Tensor


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

    def changes(self, graph: str, since: int) -> StoredChanges:
        """The triples added to ``graph`` after revision ``since`` (all of it for 0), and its labels."""
        state = self._store.state(graph)
        stored = self._store.triples_since(graph, since)
        return StoredChanges(
            revision=stored.revision,
            created_at=state.created_at,
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
