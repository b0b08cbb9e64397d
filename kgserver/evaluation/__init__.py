"""Filtered rank-based evaluation of link predictors (depends on torch and :mod:`kgserver.graph`'s torch-only parts).

:func:`evaluate` gives MRR, Hits@1/3/10 and mean rank, filtered against every
known triple, with ties ranked realistically, for head and tail prediction and
both pooled. :class:`Evaluator` keeps the filter (a
:class:`~kgserver.graph.TripleIndex`) for repeated evaluations (the trainer's
validation); :func:`evaluate_split` re-evaluates a trained model on a split of a
graph whose ids may differ from the model's.
"""

from kgserver.evaluation.evaluator import Evaluator, evaluate
from kgserver.evaluation.ranking import HITS_AT, filtered_ranks
from kgserver.evaluation.split import SplitEvaluation, evaluate_split

__all__ = ["HITS_AT", "Evaluator", "SplitEvaluation", "evaluate", "evaluate_split", "filtered_ranks"]
