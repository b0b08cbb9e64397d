"""Small random knowledge graphs and tiny model configurations for the plugin tests."""

from __future__ import annotations

from collections.abc import Callable

import dgl
import pytest
import torch

from kgserver.graph.snapshot import message_graph
from kgserver.registry import KGModel, get_model

NUM_ENTITIES = 40
NUM_RELATIONS = 5


def random_triples(num_entities: int, num_relations: int, count: int, seed: int) -> torch.Tensor:
    """``count`` distinct random triples without self-loops."""
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randint(0, num_entities, (count,), generator=generator)
    rels = torch.randint(0, num_relations, (count,), generator=generator)
    tails = (heads + torch.randint(1, num_entities, (count,), generator=generator)) % num_entities
    return torch.unique(torch.stack([heads, rels, tails], dim=1), dim=0)


@pytest.fixture
def triples() -> torch.Tensor:
    return random_triples(NUM_ENTITIES, NUM_RELATIONS, 200, seed=0)


@pytest.fixture
def graph(triples: torch.Tensor) -> dgl.DGLGraph:
    return message_graph(triples, NUM_ENTITIES, NUM_RELATIONS)


def build(name: str, seed: int = 0, **overrides: object) -> KGModel:
    """A small instance of plugin ``name`` (16-dim; ConvE shrunk to match)."""
    cls = get_model(name)
    values: dict[str, object] = {
        "embedding_dim": 16,
        "conve_height": 4,
        "conve_filters": 4,
        "conve_kernel": 3,
    }
    values.update(overrides)
    torch.manual_seed(seed)
    model = cls(NUM_ENTITIES, NUM_RELATIONS, cls.hyperparameters.from_dict(values))
    gates = getattr(model, "residual_gates", None)
    if gates is not None:  # open the ReZero gates (zero at initialisation) so the layers count, as after training
        with torch.no_grad():
            gates.fill_(0.5)
    return model


@pytest.fixture
def build_model() -> Callable[..., KGModel]:
    """The :func:`build` factory, for tests that make models with their own settings."""
    return build
