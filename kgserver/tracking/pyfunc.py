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

:func:`save_pyfunc` writes such a model around a bundle (what a tracked run logs).
"""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import torch

import kgserver
from kgserver.graph.vocabulary import Vocabulary
from kgserver.registry import KGModel
from kgserver.tracking.bundle import LoadedModel, load_bundle
from kgserver.tracking.refs import BUNDLE_SUBPATH

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
        self.vocabulary = Vocabulary(loaded.entities, loaded.relations)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        default_k = int((params or {}).get("k", DEFAULT_K))
        heads = self.vocabulary.entity_ids(list(model_input["head"]))
        relations = self.vocabulary.relation_ids(list(model_input["relation"]))
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
                            "tail": self.vocabulary.entities[int(top.indices[row, rank])],
                            "score": float(top.values[row, rank]),
                        }
                    )
        return pd.DataFrame(rows, columns=["head", "relation", "rank", "tail", "score"])


def _load_pyfunc(data_path: str) -> TopTails:
    """MLflow's loader-module hook: ``data_path`` is the model's bundle directory."""
    return TopTails(load_bundle(Path(data_path)))


def save_pyfunc(path: Path, bundle: Path, model: KGModel) -> Path:
    """Write the MLflow pyfunc model (loader-module flavor: this module) whose data is the bundle."""
    import mlflow

    with warnings.catch_warnings():
        # MLflow asks for an input example; the explicit signature documents the input instead.
        warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
        mlflow.pyfunc.save_model(
            str(path),
            loader_module=__name__,
            data_path=str(bundle),
            signature=signature(),
            pip_requirements=_requirements(model),
        )
    if not (path / BUNDLE_SUBPATH).is_dir():
        raise RuntimeError(f"MLflow placed the bundle elsewhere than {BUNDLE_SUBPATH} in {path}")
    return path


def _requirements(model: KGModel) -> list[str]:
    """Pins for the environment that loads the pyfunc: kgserver, the plugin's package, torch, dgl."""
    import dgl

    pins = [f"kgserver=={kgserver.__version__}"]
    top_level = type(model).__module__.split(".", 1)[0]
    for distribution in importlib.metadata.packages_distributions().get(top_level, []):
        if distribution != "kgserver":
            pins.append(f"{distribution}=={importlib.metadata.version(distribution)}")
    pins += [f"torch=={torch.__version__.split('+', 1)[0]}", f"dgl=={dgl.__version__}"]
    return pins
