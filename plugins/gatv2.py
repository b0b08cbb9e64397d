"""``gatv2``: relation-aware GATv2 encoder (after Brody et al. 2021) with a 1-N decoder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from kgserver.registry import NON_NEGATIVE, POSITIVE, PROBABILITY, Bounds, register_model
from kgserver_plugins.common import GNNHyperparameters, GNNLinkPredictor
from kgserver_plugins.layers.gatv2_conv import RelGATv2Conv


@dataclass
class GATv2Hyperparameters(GNNHyperparameters):
    """Attention settings: heads (splitting ``embedding_dim``), LeakyReLU slope, dropout on weights.

    ``attention_dim`` is the width of the hidden space the attention logits are
    computed in (split over the heads too); it sets the per-edge cost of a layer.
    """

    num_heads: int = 4
    attention_dim: int = 128
    negative_slope: float = 0.2
    attention_dropout: float = 0.0

    bounds: ClassVar[Mapping[str, Bounds]] = {
        "num_heads": POSITIVE,
        "attention_dim": POSITIVE,
        "negative_slope": NON_NEGATIVE,
        "attention_dropout": PROBABILITY,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, size in (("embedding_dim", self.embedding_dim), ("attention_dim", self.attention_dim)):
            if size % self.num_heads:
                raise ValueError(f"num_heads {self.num_heads} must divide {name} {size}")


@register_model("gatv2")
class GATv2(GNNLinkPredictor):
    """Relation-aware GATv2; each layer keeps its last attention weights in ``last_attention``."""

    reports_attention = True

    description = (
        "Relation-aware multi-head GATv2 encoder (attention over incoming edges) "
        "with a ComplEx, DistMult or ConvE decoder"
    )
    hyperparameters = GATv2Hyperparameters
    hparams: GATv2Hyperparameters

    def build_layer(self, index: int) -> nn.Module:
        dim = self.hparams.embedding_dim
        return RelGATv2Conv(
            dim,
            dim,
            num_heads=self.hparams.num_heads,
            negative_slope=self.hparams.negative_slope,
            attention_dropout=self.hparams.attention_dropout,
            attention_dim=self.hparams.attention_dim,
            activation=None if self.is_last_layer(index) else torch.nn.functional.elu,
        )

    def attention(self) -> list[Tensor]:
        """Each layer's attention weights from the last forward pass (``[E, heads]``)."""
        weights = [layer.last_attention for layer in self.layers]
        if any(weight is None for weight in weights):
            raise RuntimeError("attention() is only defined after encode()")
        return [weight for weight in weights if weight is not None]
