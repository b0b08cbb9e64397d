"""``compgcn``: CompGCN encoder (Vashishth et al. 2020) with a 1-N decoder."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from kgserver.registry import register_model
from kgserver_plugins.common import GNNHyperparameters, GNNLinkPredictor
from kgserver_plugins.layers.compgcn_conv import COMPOSITIONS, CompGCNConv


@dataclass
class CompGCNHyperparameters(GNNHyperparameters):
    """``composition`` of entity and relation on each edge: "sub", "mult" or "corr"."""

    composition: str = "corr"

    choices: ClassVar[Mapping[str, Collection[str]]] = {"composition": COMPOSITIONS}


@register_model("compgcn")
class CompGCN(GNNLinkPredictor):
    """CompGCN: composed messages, direction-specific weights, relations updated with the nodes."""

    description = (
        "CompGCN encoder (sub/mult/corr composition, relations updated) with a ComplEx, DistMult or ConvE decoder"
    )
    hyperparameters = CompGCNHyperparameters
    hparams: CompGCNHyperparameters

    def build_layer(self, index: int) -> nn.Module:
        dim = self.hparams.embedding_dim
        return CompGCNConv(dim, dim, self.num_relations, composition=self.hparams.composition)
