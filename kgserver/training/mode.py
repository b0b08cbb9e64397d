"""Memory estimates of a training run, and the choice between full-graph and neighbour-sampled training.

Full-graph training keeps every layer's per-edge activations (messages,
compositions, attention and their gradients) alive for the backward pass, so
its memory grows with ``edges x embedding_dim x layers``. When that estimate
exceeds the budget, training samples neighbourhoods instead.

Two more estimates bound what the size-aware defaults of ``kgserver train``
choose (:mod:`kgserver.training.defaults`): the training state of the embedding
tables (:func:`parameter_bytes`), which grows with the vocabulary whatever the
mode, and a step's score matrices (:func:`score_bytes`), which grow with the
batch times the candidates each query is scored against.
"""

from __future__ import annotations

import psutil
import torch

from kgserver.errors import ConfigurationError
from kgserver.registry import KGModel
from kgserver.training.config import TrainConfig

# float32 bytes x live [edges, d] tensors per layer (forward and backward).
BYTES_PER_EDGE_DIM_LAYER = 4 * 8
# float32 bytes x live [entities, d] tensors per layer (inputs, outputs, grads, Adam state).
BYTES_PER_NODE_DIM_LAYER = 4 * 6
# float32 bytes x copies of each embedding-table number: the weight, its dense gradient, Adam's two
# moments and the best checkpoint's copy.
BYTES_PER_PARAMETER = 4 * 5
# float32 bytes x live [queries, candidates] tensors of a step under binary cross-entropy: logits,
# targets, smoothed targets, the loss's intermediates and two gradients. Softmax cross-entropy (the
# default) keeps fewer (logits and one gradient), so for it this is an overestimate.
BYTES_PER_SCORE = 4 * 6
# The share of the device's memory a step's activations may take (the rest holds the parameters,
# their optimiser state and the graph).
ACTIVATION_SHARE = 0.5
DEFAULT_FANOUT = 10


def full_graph_bytes(num_edges: int, num_entities: int, dim: int, layers: int) -> int:
    """Estimated activation memory of one full-graph training step."""
    return (num_edges * BYTES_PER_EDGE_DIM_LAYER + num_entities * BYTES_PER_NODE_DIM_LAYER) * dim * layers


def parameter_bytes(num_entities: int, num_relations: int, dim: int) -> int:
    """Estimated training state of the ``[N, d]`` entity and ``[2R, d]`` relation embedding tables.

    The layers' own weights (a few ``d x d`` matrices) are left out: they matter
    only for vocabularies too small for memory to be a question.
    """
    return (num_entities + 2 * num_relations) * dim * BYTES_PER_PARAMETER


def score_bytes(queries: int, candidates: int) -> int:
    """Estimated memory of scoring ``queries`` against ``candidates`` each, with the loss and its gradient."""
    return queries * candidates * BYTES_PER_SCORE


def device_memory(device: torch.device) -> int:
    """Bytes of memory the device has: the GPU's for CUDA, the machine's physical memory otherwise."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(psutil.virtual_memory().total)


def memory_budget(config: TrainConfig, device: torch.device) -> int:
    """Bytes available to a step's activations: the configured budget, else half the device's memory."""
    if config.memory_budget_gb is not None:
        return int(config.memory_budget_gb * 2**30)
    return int(device_memory(device) * ACTIVATION_SHARE)


def mode_for(num_edges: int, num_entities: int, dim: int, layers: int, budget: int) -> str:
    """``"full"`` when a full-graph step's estimated activations fit ``budget`` bytes, else ``"sampled"``."""
    return "full" if full_graph_bytes(num_edges, num_entities, dim, layers) <= budget else "sampled"


def choose_mode(model: KGModel, num_edges: int, config: TrainConfig, device: torch.device) -> str:
    """``"full"`` or ``"sampled"``: the config's override, else by the memory estimate."""
    if config.mode != "auto":
        return config.mode
    hparams = model.hparams
    return mode_for(
        num_edges, model.num_entities, hparams.embedding_dim, hparams.num_layers, memory_budget(config, device)
    )


def fanouts_for(model: KGModel, config: TrainConfig) -> tuple[int, ...]:
    """Neighbours sampled per layer: the config's, else ``DEFAULT_FANOUT`` for each model layer."""
    layers = model.hparams.num_layers
    if config.fanouts is not None:
        if len(config.fanouts) != layers:
            raise ConfigurationError(
                f"fanouts {list(config.fanouts)} give {len(config.fanouts)} sampled layers "
                f"but the model has num_layers={layers}"
            )
        return config.fanouts
    return (DEFAULT_FANOUT,) * layers
