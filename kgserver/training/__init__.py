"""Training link predictors: :func:`train` a plugin model on a :class:`~kgserver.graph.Snapshot`.

1-N or sampled-negative scoring (as the plugin declares) with binary or softmax
cross-entropy and label smoothing (as its hyperparameters say),
Adam with gradient clipping, early stopping on validation MRR, full-graph or
neighbour-sampled mini-batches (chosen by a memory estimate, or forced).
"""

from kgserver.training.config import Observer, Observers, TrainConfig, TrainResult
from kgserver.training.runtime import resolve_device, seed_everything
from kgserver.training.trainer import train

__all__ = ["Observer", "Observers", "TrainConfig", "TrainResult", "resolve_device", "seed_everything", "train"]
