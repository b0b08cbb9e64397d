"""Filtered rank-based evaluation of link predictors (depends on torch only).

:func:`evaluate` gives MRR, Hits@1/3/10 and mean rank, filtered against every
known triple, with ties ranked realistically, for head and tail prediction and
both pooled. :class:`Evaluator` keeps the filter for repeated evaluations (the
trainer's validation), :class:`AnswerIndex` is the batched query -> answers
lookup shared with the 1-N training targets.
"""

from kgserver.evaluation.evaluator import Evaluator, evaluate
from kgserver.evaluation.index import AnswerIndex
from kgserver.evaluation.ranking import HITS_AT, filtered_ranks

__all__ = ["AnswerIndex", "Evaluator", "HITS_AT", "evaluate", "filtered_ranks"]
