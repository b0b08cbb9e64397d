"""The two objectives against their textbook formulas, on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from kgserver.registry import Hyperparameters
from kgserver.training.losses import Objective, one_to_n_loss

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.0, 1.0, -2.0, 3.0]])
ROWS, OBJECTS = torch.tensor([0, 0, 1]), torch.tensor([0, 2, 3])  # row 0 has two answers


def test_softmax_cross_entropy_counts_every_answer_once() -> None:
    """A query's target is spread over its answers and its loss weighted by their number:
    the mean over triples of ``-log p(answer)``, as in 1vsAll training."""
    loss = one_to_n_loss(Objective("ce", 0.0, 4), LOGITS, ROWS, OBJECTS)
    log_p = LOGITS.log_softmax(dim=1)
    expected = -(log_p[0, 0] + log_p[0, 2] + log_p[1, 3]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_softmax_label_smoothing_mixes_in_the_uniform_distribution() -> None:
    eps = 0.2
    loss = one_to_n_loss(Objective("ce", eps, 4), LOGITS[1:], torch.tensor([0]), torch.tensor([3]))
    log_p = LOGITS[1].log_softmax(dim=0)
    expected = -((1 - eps) * log_p[3] + eps * log_p.mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_softmax_cross_entropy_from_sparse_answers_has_the_dense_targets_gradient(eps: float) -> None:
    """The loss keeps its answers sparse; its value and gradient equal ``F.cross_entropy`` on
    the dense targets each row spreads over its answers, weighted by their number."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    rows, objects = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4]), torch.tensor([1, 6, 0, 2, 2, 4, 5, 6])
    sparse = logits.clone().requires_grad_()
    dense = logits.clone().requires_grad_()
    loss = one_to_n_loss(Objective("ce", eps, 7), sparse, rows, objects)
    targets = torch.zeros_like(logits)
    targets[rows, objects] = 1.0
    answers = targets.sum(dim=1)
    per_query = torch.nn.functional.cross_entropy(
        dense, targets / answers.unsqueeze(1), label_smoothing=eps, reduction="none"
    )
    expected = (per_query * answers).sum() / answers.sum()
    loss.backward()
    expected.backward()
    torch.testing.assert_close(loss, expected.float())
    torch.testing.assert_close(sparse.grad, dense.grad)


def test_binary_cross_entropy_smooths_towards_one_over_the_entity_count() -> None:
    eps = 0.1
    loss = one_to_n_loss(Objective("bce", eps, 4), LOGITS, ROWS, OBJECTS)
    targets = torch.zeros_like(LOGITS)
    targets[ROWS, OBJECTS] = 1.0
    smoothed = targets * (1 - eps) + eps / 4
    terms = [
        -(y * math.log(torch.sigmoid(x).item()) + (1 - y) * math.log(1 - torch.sigmoid(x).item()))
        for x, y in zip(LOGITS.flatten(), smoothed.flatten().tolist())
    ]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("loss", "hinge", "loss must be one of bce, ce"), ("label_smoothing", 1.0, "label_smoothing must be in")],
)
def test_bad_objective_settings_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Hyperparameters(**{field: value})
