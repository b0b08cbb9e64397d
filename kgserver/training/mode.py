"""Choosing between full-graph and neighbour-sampled training.

Full-graph training keeps every layer's per-edge activations (messages,
compositions, attention and their gradients) alive for the backward pass, so
its memory grows with ``edges x embedding_dim x layers``. When that estimate
exceeds the budget, training samples neighbourhoods instead.
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
DEFAULT_FANOUT = 10


def full_graph_bytes(num_edges: int, num_entities: int, dim: int, layers: int) -> int:
    """Estimated activation memory of one full-graph training step."""
    return (num_edges * BYTES_PER_EDGE_DIM_LAYER + num_entities * BYTES_PER_NODE_DIM_LAYER) * dim * layers


def memory_budget(config: TrainConfig, device: torch.device) -> int:
    """Bytes available to a step: the configured budget, else half the device's memory."""
    if config.memory_budget_gb is not None:
        return int(config.memory_budget_gb * 2**30)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return psutil.virtual_memory().total // 2


def choose_mode(model: KGModel, num_edges: int, config: TrainConfig, device: torch.device) -> str:
    """``"full"`` or ``"sampled"``: the config's override, else by the memory estimate."""
    if config.mode != "auto":
        return config.mode
    hparams = model.hparams
    needed = full_graph_bytes(num_edges, model.num_entities, hparams.embedding_dim, hparams.num_layers)
    return "full" if needed <= memory_budget(config, device) else "sampled"


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
