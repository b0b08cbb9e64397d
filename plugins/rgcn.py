"""``rgcn``: R-GCN encoder (Schlichtkrull et al. 2018) with a 1-N decoder."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from kgserver.registry import POSITIVE, Bounds, register_model
from kgserver_plugins.common import GNNHyperparameters, GNNLinkPredictor
from kgserver_plugins.layers.rgcn_conv import REGULARIZERS, RelGraphConv


@dataclass
class RGCNHyperparameters(GNNHyperparameters):
    """R-GCN's weight sharing: ``regularizer`` "basis" (``num_bases`` shared
    matrices) or "bdd" (``num_bases`` diagonal blocks per relation)."""

    regularizer: str = "basis"
    num_bases: int = 4

    bounds: ClassVar[Mapping[str, Bounds]] = {"num_bases": POSITIVE}
    choices: ClassVar[Mapping[str, Collection[str]]] = {"regularizer": REGULARIZERS}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.regularizer == "bdd" and self.embedding_dim % self.num_bases:
            raise ValueError(f"with bdd, num_bases {self.num_bases} must divide embedding_dim {self.embedding_dim}")


@register_model("rgcn")
class RGCN(GNNLinkPredictor):
    """R-GCN: relation-specific weights (basis/block-diagonal) over 2R edge types plus self-loop."""

    description = "R-GCN encoder (basis or block-diagonal relation weights) with a ComplEx, DistMult or ConvE decoder"
    hyperparameters = RGCNHyperparameters
    hparams: RGCNHyperparameters

    def build_layer(self, index: int) -> nn.Module:
        dim = self.hparams.embedding_dim
        return RelGraphConv(
            dim,
            dim,
            2 * self.num_relations,
            regularizer=self.hparams.regularizer,
            num_bases=self.hparams.num_bases,
            activation=None if self.is_last_layer(index) else torch.relu,
        )
