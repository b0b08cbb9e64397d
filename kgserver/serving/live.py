"""A served state extended by what the store added, and the embeddings that recomputes.

:func:`extended` takes a served state and a graph's :class:`GraphChanges` to the
next state (see :mod:`kgserver.serving.watcher` for what that means for answers);
it is how a server starts from a store too (see
:func:`kgserver.serving.source.served_model`), so entities imported between
training and serving are treated exactly like those imported while serving.

:func:`reencode` computes the embeddings, recomputing only what changed. An ``L``-layer
encoder gives an entity an embedding from its ``L``-hop neighbourhood. When triples are
added (or removed) and entities appear, only the entities within ``L`` hops of a touched
node (a new entity, an endpoint of a changed triple) can have a different embedding (``L
- 1`` for a plugin whose layers aggregate at the destination, as the built-in ones do);
every other row of the served model's embeddings stays valid. :func:`reencode` encodes
just those entities, on the blocks :func:`kgserver.explain.neighbourhood.neighbourhood`
draws from the current message graph, which give exactly the embeddings the whole graph
gives. New entities' input is the model's learned "unseen" vector (see the plugin
contract's ``embeds_unseen_entities``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import dgl
import torch
from torch import Tensor

from kgserver.errors import KGServerError, UnseenEntityUnsupported, UnseenRelationUnsupported
from kgserver.explain.neighbourhood import neighbourhood
from kgserver.graph.index import TripleIndex
from kgserver.graph.snapshot import message_graph
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving.served import ServedModel, scoring_layout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphChanges:
    """What a graph gained after some revision, up to ``revision``: ``triples`` (``[n, 3]``
    int64 ids of ``vocabulary``, the entities and relations they use), the graph's labels now,
    and the creation time of the graph they belong to (see :class:`kgserver.store.GraphState`)."""

    revision: int
    created_at: datetime | None
    vocabulary: Vocabulary
    triples: Tensor
    labels: Mapping[str, Mapping[str, str]]
    held_out: Tensor | None = None
    """bool ``[n]``: triples of a stored valid or test split (known, never evidence); None: none."""


Reencoder = Callable[[ServedModel, Vocabulary, Tensor, Tensor], Tensor]
"""``reencode(served, vocabulary, message_triples, touched) -> entity embeddings`` for the
extended vocabulary (:func:`reencode`, or a stand-in in tests)."""


def extended(served: ServedModel, changes: GraphChanges, reencode: Reencoder | None) -> ServedModel:
    """``served`` plus the triples in ``changes``, at ``changes.revision`` (see the module doc).

    Triples marked ``held_out`` (a stored valid or test split) become known, so
    ``filter_known`` leaves them out, but never evidence: they are not added to the
    message graph and do not bring new entities in.
    """
    old = served.vocabulary
    names = changes.vocabulary
    heads = [names.entities[i] for i in changes.triples[:, 0].tolist()]
    relations = [names.relations[i] for i in changes.triples[:, 1].tolist()]
    tails = [names.entities[i] for i in changes.triples[:, 2].tolist()]
    held_out = changes.held_out.tolist() if changes.held_out is not None else [False] * len(heads)
    unseen_relations = {r for r in relations if not old.has_relation(r)}
    usable = [i for i, r in enumerate(relations) if r not in unseen_relations]
    evidence = [i for i in usable if not held_out[i]]
    new_entities = list(
        dict.fromkeys(iri for i in evidence for iri in (heads[i], tails[i]) if not old.has_entity(iri))
    )
    named = (heads, relations, tails)
    if reencode is not None:
        try:
            vocabulary = old.with_entities(new_entities)
            return _reencoded(served, changes, reencode, vocabulary, named,
                              (evidence, _nameable(vocabulary, named, usable)), unseen_relations)  # fmt: skip
        except KGServerError as error:  # the plugin cannot embed unseen entities: its typed refusal
            log.warning("%s: %s; new entities will answer NOT_FOUND until the model is retrained", served.ref, error)
    # No re-encoding: new triples among known entities only extend the filter (the message
    # graph stays what the embeddings were computed from); new entities are not embeddable.
    added = _id_triples(old, named, _nameable(old, named, usable))
    known_triples = torch.cat([served.known_triples, added])
    return replace(
        served,
        known=TripleIndex.build(known_triples, old.num_relations) if len(added) else served.known,
        known_triples=known_triples,
        store_revision=changes.revision,
        store_created_at=changes.created_at,
        labels=changes.labels,
        unembeddable=served.unembeddable | frozenset(new_entities),
        unseen_relations=served.unseen_relations | unseen_relations,
    )


Named = tuple[list[str], list[str], list[str]]
"""Heads, relations and tails of some triples, as IRIs."""


def _nameable(vocabulary: Vocabulary, named: Named, rows: list[int]) -> list[int]:
    """Those of ``rows`` whose head and tail ``vocabulary`` has."""
    heads, _, tails = named
    return [i for i in rows if vocabulary.has_entity(heads[i]) and vocabulary.has_entity(tails[i])]


def _id_triples(vocabulary: Vocabulary, named: Named, rows: list[int]) -> Tensor:
    """The triples at ``rows`` of the three IRI columns, as ``[n, 3]`` ids of ``vocabulary``."""
    heads, relations, tails = named
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
    named: Named,
    rows: tuple[list[int], list[int]],
    unseen_relations: set[str],
) -> ServedModel:
    """:func:`extended` with new entities appended (``vocabulary``) and the touched neighbourhoods
    re-encoded; ``rows`` are the evidence rows (message edges) and the rows that become known."""
    evidence, known_rows = rows
    added = _id_triples(vocabulary, named, evidence)
    known_added = _id_triples(vocabulary, named, known_rows)
    known_triples = torch.cat([served.known_triples, known_added])
    message_triples = torch.cat([served.train_triples, added]) if len(added) else served.train_triples

    entity_emb = served.entity_emb
    if len(added):
        touched = torch.unique(torch.cat([added[:, 0], added[:, 2]]))
        with torch.inference_mode():
            entity_emb = reencode(served, vocabulary, message_triples, touched).detach()
        if entity_emb.shape[0] != vocabulary.num_entities:
            raise RuntimeError(
                f"reencode returned {entity_emb.shape[0]} embeddings for {vocabulary.num_entities} entities"
            )
    new_entities = frozenset(vocabulary.entities[served.vocabulary.num_entities :])
    return replace(
        served,
        vocabulary=vocabulary,
        entity_emb=entity_emb,
        known=TripleIndex.build(known_triples, vocabulary.num_relations) if len(known_added) else served.known,
        known_triples=known_triples,
        train_triples=message_triples,
        store_revision=changes.revision,
        store_created_at=changes.created_at,
        labels=changes.labels,
        unembeddable=served.unembeddable - new_entities,
        unseen_relations=served.unseen_relations | unseen_relations,
    )


def reencode(served: ServedModel, vocabulary: Vocabulary, message_triples: Tensor, touched: Tensor) -> Tensor:
    """Entity embeddings ``[len(vocabulary.entities), d]`` over the message graph of ``message_triples``,
    in :func:`~kgserver.serving.served.scoring_layout`.

    ``vocabulary`` extends the served model's: the same relations, the same entities
    in the same order, new entities appended. ``message_triples`` (int64 ``[n, 3]``,
    ids of ``vocabulary``) are all the triples the encoder should see now (inverse
    edges are added as in training). ``touched`` holds the ids of new entities and of
    both endpoints of every triple added or removed since the served embeddings were
    computed; new entities are always treated as touched. Rows of entities within the
    model's receptive field of ``touched`` (one hop less for a plugin that
    ``aggregates_at_destination``: a changed in-edge changes layer ``l`` only within
    ``l - 1`` hops) are recomputed; all others are copied from ``served.entity_emb``. A
    plugin that declares no receptive field is re-encoded whole.

    Raises :class:`UnseenEntityUnsupported` when there are new entities and the model
    cannot embed them, :class:`UnseenRelationUnsupported` for a relation it has no
    embedding for.
    """
    old, new = served.num_entities, vocabulary.num_entities
    _check_vocabulary(served, vocabulary)
    model = served.model
    if new > old and not model.can_embed_unseen_entities():
        raise UnseenEntityUnsupported(served.ref, served.plugin, new - old, vocabulary.entities[old])
    triples = _checked_ids(message_triples, new, vocabulary.num_relations)
    touched = torch.cat([touched.to(torch.int64).reshape(-1), torch.arange(old, new, dtype=torch.int64)])
    if len(touched) and (int(touched.min()) < 0 or int(touched.max()) >= new):
        raise ValueError(f"touched entity ids must lie in [0, {new})")
    graph = message_graph(triples, new, vocabulary.num_relations)
    hops = model.receptive_field()
    with torch.inference_mode():
        if hops is None:
            entity_emb, _ = model.encode(graph)
            return scoring_layout(entity_emb.detach())
        embeddings = torch.empty(served.embedding_dim, new, dtype=served.entity_emb.dtype).t()  # scoring_layout
        embeddings[:old] = served.entity_emb
        radius = max(hops - 1, 0) if model.aggregates_at_destination else hops
        affected = affected_entities(graph, touched, radius)
        if len(affected):
            around = neighbourhood(graph, affected.tolist(), hops)
            entity_emb, _ = model.encode(around.blocks)
            embeddings[around.seeds] = entity_emb.to(embeddings.dtype)
    return embeddings


def affected_entities(graph: dgl.DGLGraph, touched: Tensor, hops: int) -> Tensor:
    """Sorted ids of the entities within ``hops`` hops of ``touched`` (included) in ``graph``.

    The message graph holds every edge in both directions, so following out-edges
    finds every entity whose ``hops``-hop in-neighbourhood reaches a touched node.
    """
    touched = torch.unique(touched)
    if not len(touched) or hops == 0:
        return touched
    reached, _ = dgl.khop_out_subgraph(graph, touched, k=hops)
    return torch.sort(reached.ndata[dgl.NID]).values


def _check_vocabulary(served: ServedModel, vocabulary: Vocabulary) -> None:
    if vocabulary.relations != served.vocabulary.relations:
        extra = [iri for iri in vocabulary.relations if iri not in set(served.vocabulary.relations)]
        raise UnseenRelationUnsupported(served.ref, extra[0] if extra else "(relations reordered or removed)")
    old = served.num_entities
    if vocabulary.num_entities < old or vocabulary.entities[:old] != served.vocabulary.entities:
        raise ValueError(
            f"the vocabulary must extend model {served.ref!r}'s: its {old} entities first, in order, new ones after"
        )


def _checked_ids(triples: Tensor, num_entities: int, num_relations: int) -> Tensor:
    if triples.dim() != 2 or triples.shape[1] != 3:
        raise ValueError(f"message triples must be [n, 3], got {list(triples.shape)}")
    triples = triples.to(torch.int64)
    if len(triples):
        entities, relations = triples[:, [0, 2]], triples[:, 1]
        if int(entities.min()) < 0 or int(entities.max()) >= num_entities:
            raise ValueError(f"message triples name entity ids outside [0, {num_entities})")
        if int(relations.min()) < 0 or int(relations.max()) >= num_relations:
            raise ValueError(f"message triples name relation ids outside [0, {num_relations})")
    return triples
