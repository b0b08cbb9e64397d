"""Entity embeddings for a graph that changed after training, recomputing only what changed.

An ``L``-layer encoder gives an entity an embedding from its ``L``-hop
neighbourhood. When triples are added (or removed) and entities appear, only the
entities within ``L`` hops of a touched node (a new entity, an endpoint of a
changed triple) can have a different embedding; every other row of the served
model's embeddings stays valid. :func:`reencode` encodes just those entities, on
the blocks :func:`kgserver.explain.neighbourhood.neighbourhood` draws from the
current message graph, which give exactly the embeddings the whole graph gives.
New entities' input is the model's learned "unseen" vector (see the plugin
contract's ``embeds_unseen_entities``).
"""

from __future__ import annotations

import dgl
import torch
from torch import Tensor

from kgserver.errors import UnseenEntityUnsupported, UnseenRelationUnsupported
from kgserver.explain.neighbourhood import neighbourhood
from kgserver.graph.snapshot import message_graph
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving.served import ServedModel


def reencode(served: ServedModel, vocabulary: Vocabulary, message_triples: Tensor, touched: Tensor) -> Tensor:
    """Entity embeddings ``[len(vocabulary.entities), d]`` over the message graph of ``message_triples``.

    ``vocabulary`` extends the served model's: the same relations, the same entities
    in the same order, new entities appended. ``message_triples`` (int64 ``[n, 3]``,
    ids of ``vocabulary``) are all the triples the encoder should see now (inverse
    edges are added as in training). ``touched`` holds the ids of new entities and of
    both endpoints of every triple added or removed since the served embeddings were
    computed; new entities are always treated as touched. Rows of entities within the
    model's receptive field of ``touched`` are recomputed; all others are copied from
    ``served.entity_emb``. A plugin that declares no receptive field is re-encoded whole.

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
            return entity_emb.detach().contiguous()
        embeddings = torch.empty(new, served.embedding_dim, dtype=served.entity_emb.dtype)
        embeddings[:old] = served.entity_emb
        affected = affected_entities(graph, touched, hops)
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
    if not len(touched):
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
