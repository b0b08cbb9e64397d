"""Ground truth: on a graph where ``r3(x, z)`` holds exactly when ``r1(x, y)`` and ``r2(y, z)``,
the explanation of a held-out ``r3`` triple the model ranks first must point at its path.

Every built-in plugin is trained for a few seconds with two layers, so that ``x``'s
embedding sees ``y`` and ``z`` (a one-layer encoder sees the path too, ``r1`` from
``x``'s side and ``r2`` from ``z``'s; two layers give each end the whole path).
"""

from __future__ import annotations

import pytest
import torch

from kgserver.explain import Explainer
from kgserver.explain.explainer import Explanation
from tests.explain.synthetic import NOISE, R1, R2, ChainGraph, chain_graph, train_model

EPOCHS = {"rgcn": 300, "compgcn": 200, "gatv2": 200}
"""R-GCN learns the rule more slowly: after 200 epochs its top-3 rate varied between 0.89 and 0.97
with the training seed (at the 0.9 bar), after 300 it was 0.94-0.95."""


@pytest.fixture(scope="module")
def data() -> ChainGraph:
    return chain_graph(seed=0)


def _true_path(data: ChainGraph, head: int, tail: int) -> list[tuple[int, int, int]]:
    middle = data.middle[(head, tail)]
    return [(head, R1, middle), (middle, R2, tail)]


@pytest.mark.parametrize("plugin", ["rgcn", "compgcn", "gatv2"])
def test_the_true_path_explains_held_out_triples(plugin: str, data: ChainGraph) -> None:
    torch.set_num_threads(1)
    model = train_model(plugin, data, num_layers=2, epochs=EPOCHS[plugin])
    explainer = Explainer(model, data.train)
    assert explainer.method == "gradient"
    every_edge = 10**6  # every evidence edge, to compare path and noise weights
    explanations: list[Explanation] = [explainer.explain(h, r, t, k=every_edge) for h, r, t in data.held_out.tolist()]
    ranked_first = [e for e in explanations if e.rank == 1]
    assert len(ranked_first) >= len(explanations) // 2, "the model did not learn the rule"

    in_top3 = top_path = 0
    path_weights: list[float] = []
    noise_weights: list[float] = []
    for explanation in ranked_first:
        head, _, tail = explanation.triple
        truth = _true_path(data, head, tail)
        in_top3 += set(truth) <= {item.triple for item in explanation.evidence[:3]}
        top_path += bool(explanation.paths) and list(explanation.paths[0].hops) == truth
        for item in explanation.evidence:
            if item.triple in truth:
                path_weights.append(item.weight)
            elif item.triple[1] in NOISE:
                noise_weights.append(item.weight)
    cases = len(ranked_first)
    assert in_top3 / cases >= 0.9, f"{in_top3} of {cases}"
    assert top_path / cases >= 0.8, f"{top_path} of {cases}"
    assert sum(noise_weights) / len(noise_weights) < sum(path_weights) / len(path_weights)
