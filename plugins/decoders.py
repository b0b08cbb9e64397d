"""Decoders: score ``(head, relation)`` queries against candidate tails, 1-N style.

Every decoder maps ``h [B, d]``, ``r [B, d]`` and candidates ``t [C, d]`` to
``[B, C]`` logits, so the trainer can score all entities at once (1-N) and the
server can score a query against every entity with one matrix product. A
decoder is chosen by the ``decoder`` hyperparameter; :func:`register_decoder`
adds one under a name (the same small decorator registry as the models).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor, nn

from kgserver.registry import claim_name

if TYPE_CHECKING:
    from kgserver_plugins.common import GNNHyperparameters

D = TypeVar("D", bound=type["Decoder"])

DECODERS: dict[str, type[Decoder]] = {}


def register_decoder(name: str) -> Callable[[D], D]:
    """Class decorator: make a :class:`Decoder` selectable as ``decoder=name``.

    A name already taken by another class (by module and qualified name) is an error,
    as for models.
    """

    def decorate(cls: D) -> D:
        return claim_name(DECODERS, name, cls, "decoder")

    return decorate


def build_decoder(hparams: GNNHyperparameters) -> Decoder:
    """The decoder named by ``hparams.decoder``, configured from ``hparams``."""
    if hparams.decoder not in DECODERS:
        raise ValueError(f"unknown decoder {hparams.decoder!r}; known: {', '.join(sorted(DECODERS))}")
    return DECODERS[hparams.decoder].from_hparams(hparams)


class Decoder(nn.Module):
    """Base of the decoders: ``forward(h [B, d], r [B, d], t [C, d]) -> [B, C]``."""

    @classmethod
    def from_hparams(cls, hparams: GNNHyperparameters) -> Decoder:
        raise NotImplementedError

    def forward(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        raise NotImplementedError


@register_decoder("distmult")
class DistMult(Decoder):
    """DistMult (Yang et al. 2015): ``<h, r, t>``, a diagonal bilinear form."""

    @classmethod
    def from_hparams(cls, hparams: GNNHyperparameters) -> DistMult:
        return cls()

    def forward(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        return (heads * relations) @ tails.t()


@register_decoder("complex")
class ComplEx(Decoder):
    """ComplEx (Trouillon et al. 2016): ``Re(<h, r, conj(t)>)`` with the first and second
    halves of each vector as real and imaginary parts; asymmetric, and as cheap as
    DistMult (one matrix product against the candidates)."""

    @classmethod
    def from_hparams(cls, hparams: GNNHyperparameters) -> ComplEx:
        if hparams.embedding_dim % 2:
            raise ValueError(f"the complex decoder needs an even embedding_dim, got {hparams.embedding_dim}")
        return cls()

    def forward(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        h_re, h_im = heads.chunk(2, dim=-1)
        r_re, r_im = relations.chunk(2, dim=-1)
        query = torch.cat([h_re * r_re - h_im * r_im, h_re * r_im + h_im * r_re], dim=-1)
        return query @ tails.t()


@register_decoder("conve")
class ConvE(Decoder):
    """ConvE (Dettmers et al. 2018): a 2-D convolution over the stacked ``h`` and ``r``.

    ``h`` and ``r`` are each reshaped to ``height x (d / height)`` images and
    stacked; batchnorm, input dropout, convolution, batchnorm, ReLU, feature-map
    dropout, a fully connected projection back to ``d``, hidden dropout,
    batchnorm and ReLU give a query vector whose dot product with every
    candidate is its logit. The per-entity bias of the original is left out:
    the contract scores candidate *embeddings*, not ids.
    """

    def __init__(
        self,
        dim: int,
        height: int,
        filters: int,
        kernel: int,
        input_dropout: float,
        feature_dropout: float,
        hidden_dropout: float,
    ) -> None:
        super().__init__()
        if dim % height:
            raise ValueError(f"conve_height {height} must divide embedding_dim {dim}")
        self.height, self.width = height, dim // height
        out_h, out_w = 2 * self.height - kernel + 1, self.width - kernel + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(
                f"conve_kernel {kernel} is larger than the {2 * self.height}x{self.width} input image"
            )
        self.input_norm = nn.BatchNorm2d(1)
        self.input_dropout = nn.Dropout(input_dropout)
        self.conv = nn.Conv2d(1, filters, kernel)
        self.feature_norm = nn.BatchNorm2d(filters)
        self.feature_dropout = nn.Dropout2d(feature_dropout)
        self.fc = nn.Linear(filters * out_h * out_w, dim)
        self.hidden_dropout = nn.Dropout(hidden_dropout)
        self.hidden_norm = nn.BatchNorm1d(dim)

    @classmethod
    def from_hparams(cls, hparams: GNNHyperparameters) -> ConvE:
        return cls(
            dim=hparams.embedding_dim,
            height=hparams.conve_height,
            filters=hparams.conve_filters,
            kernel=hparams.conve_kernel,
            input_dropout=hparams.conve_input_dropout,
            feature_dropout=hparams.conve_feature_dropout,
            hidden_dropout=hparams.conve_hidden_dropout,
        )

    def query(self, heads: Tensor, relations: Tensor) -> Tensor:
        """The ``[B, d]`` query vector of each ``(h, r)`` pair."""
        image = torch.cat(
            [heads.view(-1, 1, self.height, self.width), relations.view(-1, 1, self.height, self.width)],
            dim=2,
        )
        x = self.input_dropout(self.input_norm(image))
        x = self.feature_dropout(torch.relu(self.feature_norm(self.conv(x))))
        x = self.hidden_dropout(self.fc(x.flatten(1)))
        return torch.relu(self.hidden_norm(x))

    def forward(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        return self.query(heads, relations) @ tails.t()
