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
from typing import Any

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

    def normaliser(self, queries: int, answers: int) -> float:
        """What :func:`one_to_n_loss` is a mean over for ``queries`` rows holding ``answers`` true answers.

        Data-parallel ranks weight their losses by it, so that together they
        compute the same loss as one process over the whole batch.
        """
        return float(answers if self.kind == "ce" else queries)


def one_to_n_loss(objective: Objective, logits: Tensor, rows: Tensor, objects: Tensor) -> Tensor:
    """Loss of ``logits [B, N]`` against the answers ``(rows, objects)`` (distinct pairs).

    Softmax cross-entropy never densifies the targets (:class:`_SparseTargetCrossEntropy`);
    binary cross-entropy densifies them for this batch only. Logits computed in a lower
    precision (``TrainConfig.precision``) are scored in float32.
    """
    logits = logits.float()
    if objective.kind == "ce":
        answers = torch.bincount(rows, minlength=logits.shape[0]).to(logits.dtype)
        total = _SparseTargetCrossEntropy.apply(logits, rows, objects, answers, objective.label_smoothing)
        return total / answers.sum()
    targets = torch.zeros_like(logits)
    targets[rows, objects] = 1.0
    if objective.label_smoothing:
        targets = targets * (1.0 - objective.label_smoothing) + objective.label_smoothing / objective.num_entities
    return F.binary_cross_entropy_with_logits(logits, targets)


class _SparseTargetCrossEntropy(torch.autograd.Function):
    """``sum_q n_q CE(logits_q, t_q)`` (what :func:`one_to_n_loss` divides by ``sum_q n_q``
    for ``kind="ce"``), from the answers ``(rows, objects)`` and their count per row ``n_q``.

    With ``t_q`` uniform over the row's answers and smoothed by ``eps`` towards
    ``1 / C``, the row's loss is ``lse_q - (1 - eps) mean_{a in A_q} s_qa - eps mean_c s_qc``,
    and its gradient ``softmax(s_q) - (1 - eps) t_q - eps / C``. Forward reads the
    ``[B, C]`` logits twice (log-sum-exp, row sums); backward writes one ``[B, C]``
    gradient in place. Dense targets and the autograd of ``F.cross_entropy`` make
    and pass over several ``[B, C]`` tensors, the largest of a 1-N step.
    """

    @staticmethod
    def forward(ctx: Any, logits: Tensor, rows: Tensor, objects: Tensor, answers: Tensor, eps: float) -> Tensor:
        lse = torch.logsumexp(logits, dim=1)
        total = (answers * (lse - eps / logits.shape[1] * logits.sum(dim=1))).sum()
        total = total - (1.0 - eps) * logits[rows, objects].sum()
        ctx.save_for_backward(logits, lse, rows, objects, answers)
        ctx.eps = eps
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
        logits, lse, rows, objects, answers = ctx.saved_tensors
        eps = ctx.eps
        gradient = torch.sub(logits, lse.unsqueeze(1)).exp_().sub_(eps / logits.shape[1])
        gradient.mul_((answers * grad).unsqueeze(1))
        gradient.index_put_((rows, objects), (-(1.0 - eps) * grad).expand(len(rows)), accumulate=True)
        return gradient, None, None, None, None


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
    scores = model.score(heads, relations, table[candidates])  # one_to_n_loss scores in float32
    logits = torch.cat(
        [scores.gather(1, columns[:batch].unsqueeze(1)), scores.gather(1, columns[batch:].view(batch, k))], dim=1
    )
    rows = torch.arange(batch, device=logits.device)
    return one_to_n_loss(objective, logits, rows, torch.zeros_like(rows))  # column 0: the true tail
