"""A model whose decoder sleeps, so a test can hold calls in flight (e.g. across SIGTERM).

Run as a script it registers the model and then runs the kgserver CLI, so a server
subprocess can load bundles of it; importing it registers nothing, so the test
session's plugin registry stays as installed.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from kgserver.registry import Hyperparameters, KGModel, register_model

SLEEP_SECONDS = 1.0


class SlowModel(KGModel):
    name = "test-slow"
    description = "Embedding tables with a DistMult decoder that sleeps first (tests only)"

    def __init__(self, num_entities: int, num_relations: int, hparams: Hyperparameters) -> None:
        super().__init__(num_entities, num_relations, hparams)
        self.entity = nn.Parameter(torch.randn(num_entities, hparams.embedding_dim))
        self.relation = nn.Parameter(torch.randn(2 * num_relations, hparams.embedding_dim))

    def encode(self, graph: object) -> tuple[Tensor, Tensor]:
        return self.entity, self.relation

    def score(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        time.sleep(SLEEP_SECONDS)
        return (heads * relations) @ tails.t()


if __name__ == "__main__":
    register_model(SlowModel.name)(SlowModel)
    from kgserver.cli import main

    main()
