"""A graph where ``r3(x, z)`` holds exactly when ``r1(x, y)`` and ``r2(y, z)``, plus noise, and a
small model trained on it: the ground truth that explanations are checked against.

Entities are ``X``, ``Y`` and ``Z`` (``SIZE`` each). ``r1`` pairs each ``x`` with one ``y``
and ``r2`` each ``y`` with one ``z`` (random one-to-one maps), and ``r3`` is their
composition, so each ``r3`` triple has exactly one true path and no other ``r3`` triple
shares an entity with it: the path is the only evidence there is. Two noise relations
join random entities of any kind. A quarter of the ``r3`` triples are held out; the
model sees the rest and every ``r1``, ``r2`` and noise edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kgserver.graph.snapshot import message_graph
from kgserver.registry import KGModel, get_model

SIZE = 150
R1, R2, R3, NOISE = 0, 1, 2, (3, 4)
NUM_RELATIONS = 5
NOISE_EDGES = 150  # per noise relation


@dataclass(frozen=True)
class ChainGraph:
    train: torch.Tensor
    held_out: torch.Tensor
    middle: dict[tuple[int, int], int]
    """``(x, z) -> y`` of every r3 triple: its true path's middle entity."""

    @property
    def num_entities(self) -> int:
        return 3 * SIZE


def chain_graph(seed: int = 0) -> ChainGraph:
    generator = torch.Generator().manual_seed(seed)
    ys = (torch.randperm(SIZE, generator=generator) + SIZE).tolist()
    zs = (torch.randperm(SIZE, generator=generator) + 2 * SIZE).tolist()
    r1 = [(x, R1, y) for x, y in enumerate(ys)]
    r2 = [(y, R2, z) for y, z in zip(ys, zs)]
    middle = {(x, z): y for x, (y, z) in enumerate(zip(ys, zs))}
    r3 = [(x, R3, z) for (x, z) in middle]
    total = 3 * SIZE
    noise = [
        (int(h), relation, int(t))
        for relation in NOISE
        for h, t in torch.randint(total, (NOISE_EDGES, 2), generator=generator).tolist()
        if h != t
    ]
    order = torch.randperm(len(r3), generator=generator).tolist()
    held = [r3[i] for i in order[: len(r3) // 4]]
    kept = [r3[i] for i in order[len(r3) // 4 :]]
    train = torch.unique(torch.tensor(r1 + r2 + kept + noise), dim=0)
    return ChainGraph(train, torch.tensor(held), middle)


def train_model(
    plugin: str, data: ChainGraph, num_layers: int, epochs: int, seed: int = 0, **overrides: object
) -> KGModel:
    """Full-graph 1-N training with softmax cross-entropy over every entity, both directions
    (the plugin's defaults otherwise, dropout 0.3 included: it is what makes the model
    learn the rule rather than lean on the noise)."""
    torch.manual_seed(seed)
    cls = get_model(plugin)
    hparams = cls.hyperparameters.from_dict(
        {"embedding_dim": 32, "num_layers": num_layers, "learning_rate": 0.01, "unseen_entity_rate": 0.0, **overrides}
    )
    model = cls(data.num_entities, NUM_RELATIONS, hparams)
    graph = message_graph(data.train, data.num_entities, NUM_RELATIONS)
    h, r, t = data.train.unbind(1)
    queries = torch.stack([torch.cat([h, t]), torch.cat([r, r + NUM_RELATIONS])], 1)
    answers = torch.cat([t, h])
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.learning_rate)
    model.train()
    for _ in range(epochs):
        entity_emb, relation_emb = model.encode(graph)
        logits = model.score(entity_emb[queries[:, 0]], relation_emb[queries[:, 1]], entity_emb)
        loss = torch.nn.functional.cross_entropy(logits, answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
