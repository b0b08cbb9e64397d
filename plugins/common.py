"""The encoder-decoder base every built-in plugin derives from.

A GNN encoder here is a stack of message-passing layers, each called as
``layer(graph, h_src, rel) -> (h_dst, rel)``: it reads the source nodes'
features and the ``[2R, d]`` relation embeddings and returns the destination
nodes' features and the (possibly updated) relation embeddings. The base runs
that stack over a full graph (every layer sees the same graph) or over a list of
sampled blocks (layer ``i`` sees block ``i``), adds the shared depth controls
(residual connections, DropEdge, dropout) and hands ``score`` to a decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dgl
import torch
from torch import Tensor, nn

from kgserver.registry import Hyperparameters, KGModel
from kgserver_plugins.decoders import DECODERS, build_decoder
from kgserver_plugins.graphs import drop_edges


@dataclass
class GNNHyperparameters(Hyperparameters):
    """Depth controls and decoder settings shared by the GNN plugins.

    ``num_layers``, ``residual`` and ``edge_dropout`` keep deeper encoders from
    over-smoothing. ``residual`` adds each layer's output to its input through a
    learned gate that starts at zero (ReZero, Bachlechner et al. 2020): the
    encoder starts as plain embeddings, which learn fast, and lets in as much of
    the neighbourhood as helps. ``dropout`` is applied to every layer's output.
    The ``conve_*`` fields configure the ConvE decoder and are ignored by the others.
    """

    # the shared fields' defaults for these plugins: the best settings found on CoDEx-S
    # within 30 minutes on two CPU cores (bench/RESULTS.md, section Quality)
    embedding_dim: int = 512
    learning_rate: float = 0.01
    loss: str = "ce"
    num_layers: int = 1
    residual: bool = True
    edge_dropout: float = 0.0
    dropout: float = 0.3
    decoder: str = "complex"
    conve_height: int = 10
    conve_filters: int = 32
    conve_kernel: int = 3
    conve_input_dropout: float = 0.2
    conve_feature_dropout: float = 0.2
    conve_hidden_dropout: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {self.num_layers}")
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; known: {', '.join(sorted(DECODERS))}")
        for name in (
            "edge_dropout",
            "dropout",
            "conve_input_dropout",
            "conve_feature_dropout",
            "conve_hidden_dropout",
        ):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.decoder == "conve" and self.embedding_dim % self.conve_height:
            raise ValueError(
                f"conve_height {self.conve_height} must divide embedding_dim {self.embedding_dim}"
            )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Reject a string hyperparameter outside ``choices``, naming the valid ones."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class GNNLinkPredictor(KGModel):
    """Learned entity and relation inputs -> GNN layers -> decoder.

    Subclasses implement :meth:`build_layer`. Entity inputs are a learned
    ``[N, d]`` table (knowledge graphs carry no node features); relation inputs
    a learned ``[2R, d]`` table, which layers may transform (CompGCN) or pass
    through (R-GCN, GATv2) to the decoder.
    """

    hyperparameters = GNNHyperparameters
    training_mode = "1-n"
    hparams: GNNHyperparameters

    def __init__(self, num_entities: int, num_relations: int, hparams: GNNHyperparameters) -> None:
        super().__init__(num_entities, num_relations, hparams)
        dim = hparams.embedding_dim
        self.entity_embedding = nn.Parameter(torch.empty(num_entities, dim))
        self.relation_embedding = nn.Parameter(torch.empty(2 * num_relations, dim))
        nn.init.xavier_normal_(self.entity_embedding)
        nn.init.xavier_normal_(self.relation_embedding)
        self.layers = nn.ModuleList(self.build_layer(index) for index in range(hparams.num_layers))
        self.residual_gates = nn.Parameter(torch.zeros(hparams.num_layers)) if hparams.residual else None
        self.dropout = nn.Dropout(hparams.dropout)
        self.decoder = build_decoder(hparams)

    def build_layer(self, index: int) -> nn.Module:
        """Layer ``index`` of ``num_layers``: ``(graph, h_src, rel) -> (h_dst, rel)``, d to d."""
        raise NotImplementedError

    def is_last_layer(self, index: int) -> bool:
        return index == self.hparams.num_layers - 1

    def encode(self, graph: Any) -> tuple[Tensor, Tensor]:
        """Run the layers over a full graph or a list of blocks (see the registry contract)."""
        graphs, h = self._layer_inputs(graph)
        if self.training and self.hparams.edge_dropout > 0:
            graphs = self._drop_edges(graphs)
        rel = self.relation_embedding
        for index, (layer, layer_graph) in enumerate(zip(self.layers, graphs)):
            out, rel = layer(layer_graph, h, rel)
            if self.residual_gates is not None:
                out = h[: layer_graph.num_dst_nodes()] + self.residual_gates[index] * out
            h = self.dropout(out)
        return h, rel

    def score(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        return self.decoder(heads, relations, tails)

    def _layer_inputs(self, graph: Any) -> tuple[list[dgl.DGLGraph], Tensor]:
        """One graph per layer and the input features of the first one's source nodes."""
        if isinstance(graph, dgl.DGLGraph):
            if graph.num_nodes() != self.num_entities:
                raise ValueError(
                    f"graph has {graph.num_nodes()} nodes but the model was built for {self.num_entities} entities"
                )
            return [graph] * len(self.layers), self.entity_embedding
        blocks = list(graph)
        if len(blocks) != len(self.layers):
            raise ValueError(f"got {len(blocks)} blocks for {len(self.layers)} layers")
        return blocks, self.entity_embedding[blocks[0].srcdata[dgl.NID]]

    def _drop_edges(self, graphs: list[dgl.DGLGraph]) -> list[dgl.DGLGraph]:
        """DropEdge once per distinct graph, so a full graph is thinned the same way for every layer."""
        dropped: dict[int, dgl.DGLGraph] = {}
        for graph in graphs:
            if id(graph) not in dropped:
                dropped[id(graph)] = drop_edges(graph, self.hparams.edge_dropout)
        return [dropped[id(graph)] for graph in graphs]
