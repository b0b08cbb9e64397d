"""Training objectives: binary or softmax cross-entropy, over all entities or sampled negatives.

``loss="bce"`` is binary cross-entropy on each logit with label smoothing
``target * (1 - eps) + eps / num_entities`` (the LCWA convention), so a model
moves between 1-N and sampled negatives without retuning its output scale.
``loss="ce"`` is softmax cross-entropy: each query's true answers (spread evenly
when there are several) against every candidate, smoothed towards uniform by
``eps``, and weighted by its number of answers, so that every training triple
counts once, as in 1vsAll training. Weighting every query equally instead
under-weights the queries with many answers, which are as common among the test
triples as among the training triples (the comparison on CoDEx-S is in
``bench/RESULTS.md``). Softmax
cross-entropy ranks better for ComplEx-like decoders (Ruffinelli et al. 2020,
"You CAN teach an old dog new tricks!"); BCE is the classic 1-N objective of
ConvE and CompGCN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from kgserver.registry import KGModel


@dataclass(frozen=True)
class Objective:
    """The loss a plugin's hyperparameters ask for: ``kind`` and its smoothing.

    ``kind`` is one of :data:`kgserver.registry.LOSSES`.
    """

    kind: str
    label_smoothing: float
    num_entities: int

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Loss of ``logits [B, C]`` against multi-hot ``targets [B, C]`` (every row has an answer)."""
        if self.kind == "ce":
            answers = targets.sum(dim=1)
            per_query = F.cross_entropy(
                logits, targets / answers.unsqueeze(1), label_smoothing=self.label_smoothing, reduction="none"
            )
            return (per_query * answers).sum() / answers.sum()
        smoothed = targets
        if self.label_smoothing:
            smoothed = targets * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_entities
        return F.binary_cross_entropy_with_logits(logits, smoothed)

    def normaliser(self, queries: int, answers: int) -> float:
        """What :meth:`__call__` is a mean over for ``queries`` rows holding ``answers`` true answers.

        Data-parallel ranks weight their losses by it, so that together they
        compute the same loss as one process over the whole batch.
        """
        return float(answers if self.kind == "ce" else queries)


def one_to_n_loss(objective: Objective, logits: Tensor, rows: Tensor, objects: Tensor) -> Tensor:
    """Loss of ``logits [B, N]`` against the answers ``(rows, objects)``.

    The targets are kept sparse until here and densified for this batch only;
    logits computed in a lower precision (``TrainConfig.precision``) are scored in float32.
    """
    logits = logits.float()
    targets = torch.zeros_like(logits)
    targets[rows, objects] = 1.0
    return objective(logits, targets)


def negatives_loss(
    objective: Objective,
    model: KGModel,
    heads: Tensor,
    relations: Tensor,
    table: Tensor,
    positives: Tensor,
    negatives: Tensor,
) -> Tensor:
    """Loss of each query's true tail against its sampled negatives.

    ``heads [B, d]`` and ``relations [B, d_r]`` are the queries; ``positives [B]``
    and ``negatives [B, K]`` index rows of ``table`` (the entity embeddings at
    hand: all of them, or a sampled batch's output nodes). Each distinct
    candidate is decoded once: the decoder scores the queries against the
    union of the batch's candidates and the loss gathers the needed columns.
    """
    batch, k = negatives.shape
    candidates, columns = torch.unique(torch.cat([positives, negatives.reshape(-1)]), return_inverse=True)
    scores = model.score(heads, relations, table[candidates]).float()
    logits = torch.cat(
        [scores.gather(1, columns[:batch].unsqueeze(1)), scores.gather(1, columns[batch:].view(batch, k))], dim=1
    )
    targets = torch.zeros_like(logits)
    targets[:, 0] = 1.0
    return objective(logits, targets)
