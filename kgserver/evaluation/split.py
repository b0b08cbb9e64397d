"""Re-evaluating a trained model on a split of a graph, across two vocabularies.

The graph (a :class:`~kgserver.graph.Snapshot` read from the store now) and the
model (its saved vocabulary and training triples) need not share ids, nor even
IRIs: the graph may have grown since training. Its triples are mapped into the
model's ids by IRI; a triple naming an entity or relation the model does not
know cannot be ranked, so it is skipped and counted. Rankings are filtered
against every known triple: the model's training triples and every split of the
graph, as far as the model can name them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from kgserver.errors import ConfigurationError
from kgserver.evaluation.evaluator import Evaluator
from kgserver.graph.index import rows_in
from kgserver.graph.vocabulary import Vocabulary

if TYPE_CHECKING:
    from kgserver.graph.snapshot import Snapshot


class TrainedModelLike(Protocol):
    """What re-evaluation needs of :class:`kgserver.tracking.bundle.LoadedModel`."""

    model: Any
    entities: list[str]
    relations: list[str]
    train_triples: Tensor

    def graph(self) -> Any: ...


@dataclass(frozen=True)
class SplitEvaluation:
    """The metrics of one split, and what was ranked to get them.

    ``triples`` were ranked; ``unknown`` were skipped (an IRI the model lacks);
    ``in_training`` of the ranked ones are also training triples of the model.
    """

    triples: int
    unknown: int
    in_training: int
    metrics: dict[str, float]


def evaluate_split(
    trained: TrainedModelLike,
    snapshot: Snapshot,
    split: str,
    *,
    model_name: str,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> SplitEvaluation:
    """Filtered metrics of ``trained`` on the ``split`` triples of ``snapshot``.

    ``model_name`` names the model in the error raised when none of the split's
    triples can be expressed in its vocabulary.
    """
    model_vocabulary = Vocabulary(trained.entities, trained.relations)
    graph_vocabulary = snapshot.vocabulary()
    wanted, unknown = model_vocabulary.map_triples(getattr(snapshot, split), graph_vocabulary)
    if len(wanted) == 0:
        raise ConfigurationError(
            f"none of the {unknown} {split} triples of graph {snapshot.name!r} "
            f"is in the vocabulary of model {model_name!r}"
        )
    known_parts = [
        model_vocabulary.map_triples(part, graph_vocabulary)[0]
        for part in (snapshot.train, snapshot.valid, snapshot.test)
    ]
    known = torch.cat([trained.train_triples, *known_parts])
    evaluator = Evaluator(
        known, model_vocabulary.num_entities, model_vocabulary.num_relations, batch_size=batch_size, device=device
    )
    metrics = evaluator(trained.model.to(device), trained.graph().to(device), wanted)
    return SplitEvaluation(
        triples=len(wanted),
        unknown=unknown,
        in_training=int(rows_in(wanted, trained.train_triples).sum()),
        metrics=metrics,
    )


