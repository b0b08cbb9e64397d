"""Explanations of predictions: the evidence edges and paths behind a triple's score."""

from kgserver.explain.explainer import Evidence, EvidencePath, Explainer, Explanation

__all__ = ["Evidence", "EvidencePath", "Explainer", "Explanation"]
