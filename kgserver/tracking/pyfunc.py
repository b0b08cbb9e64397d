"""The MLflow ``python_function`` flavor of a kgserver model, without pickle.

A registered version is saved with MLflow's *loader module* workflow: the model's
``MLmodel`` names this module and its ``data`` is the bundle directory, so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` imports this module by name and
calls :func:`_load_pyfunc`, which goes through the same strict bundle loader as
:func:`kgserver.models.load`. Nothing is cloudpickled and no code is executed from the
artifact itself (a models-from-code file would be).

``predict`` takes a DataFrame of ``head`` and ``relation`` IRIs (and optionally a
per-row ``k``) and answers one row per predicted tail: ``head, relation, rank, tail,
score``, best first. ``k`` defaults to the ``k`` parameter (10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kgserver.errors import UnknownEntity, UnknownRelation
from kgserver.tracking.bundle import LoadedModel, load_bundle

DEFAULT_K = 10


def signature() -> Any:
    """The input, output and parameter schema MLflow records with the model."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "head"),
                ColSpec("string", "relation"),
                ColSpec("long", "k", required=False),
            ]
        ),
        outputs=Schema(
            [
                ColSpec("string", "head"),
                ColSpec("string", "relation"),
                ColSpec("long", "rank"),
                ColSpec("string", "tail"),
                ColSpec("double", "score"),
            ]
        ),
        params=ParamSchema([ParamSpec("k", "long", DEFAULT_K)]),
    )


class TopTails:
    """Top-k tail prediction over a loaded bundle (raw model scores, no filtering)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.entity_ids = {iri: i for i, iri in enumerate(loaded.entities)}
        self.relation_ids = {iri: i for i, iri in enumerate(loaded.relations)}

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        default_k = int((params or {}).get("k", DEFAULT_K))
        heads = [self._entity(iri) for iri in model_input["head"]]
        relations = [self._relation(iri) for iri in model_input["relation"]]
        if "k" in model_input.columns:
            ks = [default_k if pd.isna(k) else int(k) for k in model_input["k"]]
        else:
            ks = [default_k] * len(heads)
        if any(k < 1 for k in ks):
            raise ValueError("k must be at least 1")
        rows: list[dict[str, Any]] = []
        if heads:
            scores = self.loaded.score_tails(torch.tensor(heads), torch.tensor(relations))
            top = torch.topk(scores, min(max(ks), scores.shape[1]), dim=1)
            for row, (head, relation, k) in enumerate(zip(model_input["head"], model_input["relation"], ks)):
                for rank in range(min(k, top.indices.shape[1])):
                    rows.append(
                        {
                            "head": head,
                            "relation": relation,
                            "rank": rank + 1,
                            "tail": self.loaded.entities[int(top.indices[row, rank])],
                            "score": float(top.values[row, rank]),
                        }
                    )
        return pd.DataFrame(rows, columns=["head", "relation", "rank", "tail", "score"])

    def _entity(self, iri: str) -> int:
        if iri not in self.entity_ids:
            raise UnknownEntity(iri)
        return self.entity_ids[iri]

    def _relation(self, iri: str) -> int:
        if iri not in self.relation_ids:
            raise UnknownRelation(iri)
        return self.relation_ids[iri]


def _load_pyfunc(data_path: str) -> TopTails:
    """MLflow's loader-module hook: ``data_path`` is the model's bundle directory."""
    return TopTails(load_bundle(Path(data_path)))
