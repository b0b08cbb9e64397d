"""The encoder-decoder base every built-in plugin derives from.

A GNN encoder here is a stack of message-passing layers, each called as
``layer(graph, h_src, rel, edge_weight=None) -> (h_dst, rel)``: it reads the
source nodes' features and the ``[2R, d]`` relation embeddings and returns the
destination nodes' features and the (possibly updated) relation embeddings;
``edge_weight`` (``[E]``, optional) multiplies each edge's message, which is how
predictions are explained (the contract's ``accepts_edge_weight``). The base runs
that stack over a full graph (every layer sees the same graph) or over a list of
sampled blocks (layer ``i`` sees block ``i``), adds the shared depth controls
(residual connections, DropEdge, dropout) and hands ``score`` to a decoder.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import dgl
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from kgserver.registry import POSITIVE, PROBABILITY, Bounds, Hyperparameters, KGModel
from kgserver_plugins.decoders import DECODERS, build_decoder
from kgserver_plugins.graphs import drop_edges


@dataclass
class GNNHyperparameters(Hyperparameters):
    """Depth controls and decoder settings shared by the GNN plugins.

    ``num_layers`` (declared on the base), ``residual`` and ``edge_dropout`` keep deeper encoders from
    over-smoothing. ``residual`` adds each layer's output to its input through a
    learned gate that starts at zero (ReZero, Bachlechner et al. 2020): the
    encoder starts as plain embeddings, which learn fast, and lets in as much of
    the neighbourhood as helps. ``dropout`` is applied to every layer's output.
    The ``conve_*`` fields configure the ConvE decoder and are ignored by the others.

    ``unseen_entity_rate`` teaches the encoder to represent an entity from its
    neighbourhood alone: in every training step each entity's input embedding is,
    with this probability, replaced by one shared learned "unseen" vector, the input
    an entity added after training is given when served. Masking happens on the
    encoder's input, so the masked entity's output embedding (neighbourhood plus
    unseen vector) is both what it is queried with and what it is scored as a
    candidate with, as it will be when served. The default, 0.1, kept the CoDEx-S
    transductive quality of every plugin (bench/RESULTS.md, section Quality); 0 trains
    without the vector and leaves the model unable to embed unseen entities.
    """

    # the shared fields' defaults for these plugins: the best settings found on CoDEx-S
    # within 30 minutes on two CPU cores (bench/RESULTS.md, section Quality)
    embedding_dim: int = 512
    learning_rate: float = 0.01
    loss: str = "ce"
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
    unseen_entity_rate: float = 0.1

    bounds: ClassVar[Mapping[str, Bounds]] = {
        "edge_dropout": PROBABILITY,
        "dropout": PROBABILITY,
        "conve_height": POSITIVE,
        "conve_filters": POSITIVE,
        "conve_kernel": POSITIVE,
        "conve_input_dropout": PROBABILITY,
        "conve_feature_dropout": PROBABILITY,
        "conve_hidden_dropout": PROBABILITY,
        "unseen_entity_rate": PROBABILITY,
    }
    choices: ClassVar[Mapping[str, Collection[str]]] = {"decoder": DECODERS}
    added_later: ClassVar[Mapping[str, Any]] = {"unseen_entity_rate": 0.0}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoder == "conve" and self.embedding_dim % self.conve_height:
            raise ValueError(
                f"conve_height {self.conve_height} must divide embedding_dim {self.embedding_dim}"
            )


class GNNLinkPredictor(KGModel):
    """Learned entity and relation inputs -> GNN layers -> decoder.

    Subclasses implement :meth:`build_layer`. Entity inputs are a learned
    ``[N, d]`` table (knowledge graphs carry no node features); relation inputs
    a learned ``[2R, d]`` table, which layers may transform (CompGCN) or pass
    through (R-GCN, GATv2) to the decoder. With ``unseen_entity_rate > 0`` a learned
    ``[d]`` "unseen" vector is the input of masked entities in training and of
    entities with ids ``>= num_entities`` (added after training) always.
    """

    hyperparameters = GNNHyperparameters
    training_mode = "1-n"
    accepts_edge_weight = True
    embeds_unseen_entities = True
    aggregates_at_destination = True  # in-degree means (R-GCN, CompGCN), softmax over in-edges (GATv2)
    trains_in_bf16 = True  # DGL calls get one dtype; tested per plugin and mode against float32 steps
    hparams: GNNHyperparameters

    def __init__(self, num_entities: int, num_relations: int, hparams: GNNHyperparameters) -> None:
        super().__init__(num_entities, num_relations, hparams)
        dim = hparams.embedding_dim
        self.entity_embedding = nn.Parameter(torch.empty(num_entities, dim))
        self.relation_embedding = nn.Parameter(torch.empty(2 * num_relations, dim))
        nn.init.xavier_normal_(self.entity_embedding)
        nn.init.xavier_normal_(self.relation_embedding)
        # only models trained to use it have the vector, so bundles saved before it existed load unchanged
        self.unseen_embedding = nn.Parameter(torch.empty(1, dim)) if hparams.unseen_entity_rate > 0 else None
        if self.unseen_embedding is not None:
            nn.init.xavier_normal_(self.unseen_embedding)
        self.layers = nn.ModuleList(self.build_layer(index) for index in range(hparams.num_layers))
        self.residual_gates = nn.Parameter(torch.zeros(hparams.num_layers)) if hparams.residual else None
        self.dropout = nn.Dropout(hparams.dropout)
        self.decoder = build_decoder(hparams)
        self.sparse_gradients = False  # until the trainer enables them (sampled training in one process)

    def build_layer(self, index: int) -> nn.Module:
        """Layer ``index`` of ``num_layers``: ``(graph, h_src, rel) -> (h_dst, rel)``, d to d."""
        raise NotImplementedError

    def is_last_layer(self, index: int) -> bool:
        return index == self.hparams.num_layers - 1

    def receptive_field(self) -> int:
        return self.hparams.num_layers

    def can_embed_unseen_entities(self) -> bool:
        return self.unseen_embedding is not None

    def unseen_entity_input(self) -> Tensor:
        if self.unseen_embedding is None:
            raise NotImplementedError(
                f"this {self.name} model was trained with unseen_entity_rate 0 and cannot embed unseen entities"
            )
        return self.unseen_embedding[0]

    def encode(self, graph: Any, edge_weight: Any = None) -> tuple[Tensor, Tensor]:
        """Run the layers over a full graph or a list of blocks (see the registry contract)."""
        graphs, h = self._layer_inputs(graph)
        weights = self._layer_edge_weights(graph, graphs, edge_weight)
        if self.training and self.hparams.edge_dropout > 0:
            if edge_weight is not None:
                raise ValueError("edge_weight cannot be combined with edge dropout; encode in eval mode")
            graphs = self._drop_edges(graphs)
        rel = self.relation_embedding
        for index, (layer, layer_graph, weight) in enumerate(zip(self.layers, graphs, weights)):
            out, rel = layer(layer_graph, h, rel, edge_weight=weight)
            if self.residual_gates is not None:
                out = h[: layer_graph.num_dst_nodes()] + self.residual_gates[index] * out
            h = self.dropout(out)
        return h, rel

    def score(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        return self.decoder(heads, relations, tails)

    def _layer_inputs(self, graph: Any) -> tuple[list[dgl.DGLGraph], Tensor]:
        """One graph per layer and the input features of the first one's source nodes."""
        if isinstance(graph, dgl.DGLGraph):
            if graph.num_nodes() == self.num_entities:
                return [graph] * len(self.layers), self._masked(self.entity_embedding)
            if graph.num_nodes() < self.num_entities or self.unseen_embedding is None:
                raise ValueError(
                    f"graph has {graph.num_nodes()} nodes but the model was built for {self.num_entities} entities"
                )
            ids = torch.arange(graph.num_nodes(), device=graph.device)
            return [graph] * len(self.layers), self._entity_inputs(ids)
        blocks = list(graph)
        if len(blocks) != len(self.layers):
            raise ValueError(f"got {len(blocks)} blocks for {len(self.layers)} layers")
        return blocks, self._entity_inputs(blocks[0].srcdata[dgl.NID], sparse=self.sparse_gradients)

    def enable_sparse_gradients(self) -> frozenset[str]:
        """The entity table, whose rows a sampled step reads only for its input entities; not with
        weight decay, which SparseAdam does not apply."""
        self.sparse_gradients = self.hparams.weight_decay == 0
        return frozenset({"entity_embedding"}) if self.sparse_gradients else frozenset()

    def _entity_inputs(self, ids: Tensor, sparse: bool = False) -> Tensor:
        """Input features of entities ``ids`` (distinct); ids beyond the vocabulary get the unseen vector.

        ``sparse`` gives the entity table a sparse gradient holding only these rows.
        """
        unseen = ids >= self.num_entities
        if not bool(unseen.any()):
            return self._masked(F.embedding(ids, self.entity_embedding, sparse=sparse))
        if self.unseen_embedding is None:
            raise ValueError(
                f"entity id {int(ids.max())} is beyond the {self.num_entities} entities the model was built for "
                "and it was trained with unseen_entity_rate 0"
            )
        known = F.embedding(ids.clamp(max=self.num_entities - 1), self.entity_embedding, sparse=sparse)
        return self._masked(torch.where(unseen.unsqueeze(1), self.unseen_embedding, known))

    def _masked(self, inputs: Tensor) -> Tensor:
        """In training, each row replaced by the unseen vector with probability ``unseen_entity_rate``."""
        if not self.training or self.unseen_embedding is None:
            return inputs
        mask = torch.rand(inputs.shape[0], 1, device=inputs.device) < self.hparams.unseen_entity_rate
        return torch.where(mask, self.unseen_embedding, inputs)

    @staticmethod
    def _layer_edge_weights(graph: Any, graphs: list[dgl.DGLGraph], edge_weight: Any) -> list[Tensor | None]:
        """The edge weights of each layer's graph: one ``[E]`` for a graph, one per block for blocks."""
        if edge_weight is None:
            return [None] * len(graphs)
        weights = [edge_weight] * len(graphs) if isinstance(graph, dgl.DGLGraph) else list(edge_weight)
        if len(weights) != len(graphs):
            raise ValueError(f"got {len(weights)} edge weight tensors for {len(graphs)} blocks")
        for weight, layer_graph in zip(weights, graphs):
            if weight.shape != (layer_graph.num_edges(),):
                raise ValueError(f"edge_weight has shape {tuple(weight.shape)}, expected ({layer_graph.num_edges()},)")
        return weights

    def _drop_edges(self, graphs: list[dgl.DGLGraph]) -> list[dgl.DGLGraph]:
        """DropEdge once per distinct graph, so a full graph is thinned the same way for every layer."""
        dropped: dict[int, dgl.DGLGraph] = {}
        for graph in graphs:
            if id(graph) not in dropped:
                dropped[id(graph)] = drop_edges(graph, self.hparams.edge_dropout)
        return [dropped[id(graph)] for graph in graphs]
