"""``gatv2``: relation-aware GATv2 encoder (after Brody et al. 2021) with a 1-N decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from kgserver.registry import register_model
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

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("embedding_dim", "attention_dim"):
            if self.num_heads < 1 or getattr(self, name) % self.num_heads:
                raise ValueError(f"num_heads {self.num_heads} must be positive and divide {name} {getattr(self, name)}")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {self.attention_dropout}")


@register_model("gatv2")
class GATv2(GNNLinkPredictor):
    """Relation-aware GATv2; each layer keeps its last attention weights in ``last_attention``."""

    description = "Relation-aware multi-head GATv2 encoder (attention over incoming edges) with a ComplEx, DistMult or ConvE decoder"
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

    def attention(self) -> list[Tensor | None]:
        """Each layer's attention weights from the last forward pass (``[E, heads]`` or None)."""
        return [layer.last_attention for layer in self.layers]
