"""The two training objectives: 1-N binary cross-entropy and sampled negatives.

Both use binary cross-entropy on logits with label smoothing
``target * (1 - eps) + eps / num_entities`` (the LCWA convention), so a model
moves between the two without retuning its output scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kgserver.registry import KGModel


def smooth(targets: Tensor, label_smoothing: float, num_entities: int) -> Tensor:
    """Label smoothing towards the uniform ``1 / num_entities``."""
    if label_smoothing == 0:
        return targets
    return targets * (1.0 - label_smoothing) + label_smoothing / num_entities


def one_to_n_loss(logits: Tensor, rows: Tensor, objects: Tensor, label_smoothing: float) -> Tensor:
    """BCE of ``logits [B, N]`` against the multi-hot answers ``(rows, objects)``.

    The targets are kept sparse until here and densified for this batch only.
    """
    targets = torch.zeros_like(logits)
    targets[rows, objects] = 1.0
    return F.binary_cross_entropy_with_logits(logits, smooth(targets, label_smoothing, logits.shape[1]))


def negatives_loss(
    model: KGModel,
    heads: Tensor,
    relations: Tensor,
    table: Tensor,
    positives: Tensor,
    negatives: Tensor,
    label_smoothing: float,
    num_entities: int,
) -> Tensor:
    """BCE of each query's true tail against its sampled negatives.

    ``heads [B, d]`` and ``relations [B, d_r]`` are the queries; ``positives [B]``
    and ``negatives [B, K]`` index rows of ``table`` (the entity embeddings at
    hand: all of them, or a sampled batch's output nodes). Each distinct
    candidate is decoded once: the decoder scores the queries against the
    union of the batch's candidates and the loss gathers the needed columns.
    """
    batch, k = negatives.shape
    candidates, columns = torch.unique(torch.cat([positives, negatives.reshape(-1)]), return_inverse=True)
    scores = model.score(heads, relations, table[candidates])
    logits = torch.cat(
        [scores.gather(1, columns[:batch].unsqueeze(1)), scores.gather(1, columns[batch:].view(batch, k))], dim=1
    )
    targets = torch.zeros_like(logits)
    targets[:, 0] = 1.0
    return F.binary_cross_entropy_with_logits(logits, smooth(targets, label_smoothing, num_entities))
