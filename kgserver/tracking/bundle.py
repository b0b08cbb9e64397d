"""The model bundle: a trained model as JSON, safetensors and plain-text vocabularies.

A bundle is a directory holding exactly these files::

    config.json          plugin name, hyperparameters, kgserver version, sizes, graph name
    weights.safetensors  the model's state_dict
    entities.txt         entity IRIs in id order, one per line
    relations.txt        relation IRIs in id order, one per line
    graph.safetensors    the training triples (int64 [n, 3]) that feed the message graph

Nothing in it needs pickle, so loading a bundle runs no code from the artifact. The
loader is strict on purpose: any other file (a ``.pt``/``.pkl`` someone dropped in),
a weights file that does not parse as safetensors, or a config that is not JSON is
refused with :class:`~kgserver.errors.UnsafeArtifact` instead of being skipped, because
a bundle that was tampered with should not be served half-checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_file, save_model
from torch import Tensor

import kgserver
from kgserver.errors import ModelNotFound, UnsafeArtifact
from kgserver.graph.snapshot import Snapshot, message_graph
from kgserver.registry import KGModel, get_model

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
ENTITIES = "entities.txt"
RELATIONS = "relations.txt"
GRAPH = "graph.safetensors"
BUNDLE_FILES = (CONFIG, WEIGHTS, ENTITIES, RELATIONS, GRAPH)
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz"}


@dataclass
class LoadedModel:
    """A model rebuilt from a bundle, in eval mode, with what serving needs around it.

    ``version`` names where it came from (``"codex-compgcn/3"``, ``"runs:/<id>/model"``
    or ``"local"``) so a server can tell whether an alias has moved since.
    """

    plugin: str
    model: KGModel
    entities: list[str]
    relations: list[str]
    train_triples: Tensor
    version: str = "local"
    graph_name: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    kgserver_version: str = ""
    _graph: Any = field(default=None, init=False, repr=False)
    _embeddings: tuple[Tensor, Tensor] | None = field(default=None, init=False, repr=False)

    def graph(self) -> Any:
        """The message-passing graph (training triples plus inverses), built once."""
        if self._graph is None:
            self._graph = message_graph(self.train_triples, len(self.entities), len(self.relations))
        return self._graph

    def encode(self) -> tuple[Tensor, Tensor]:
        """Entity and relation embeddings without gradients, computed once and cached."""
        if self._embeddings is None:
            with torch.no_grad():
                self._embeddings = self.model.encode(self.graph())
        return self._embeddings

    def score_tails(self, heads: Tensor, relations: Tensor) -> Tensor:
        """Scores ``[B, N]`` of every entity as the tail of each ``(head, relation)`` id pair."""
        entity_emb, relation_emb = self.encode()
        with torch.no_grad():
            return self.model.score(entity_emb[heads], relation_emb[relations], entity_emb)


def save_bundle(path: str | Path, model: KGModel, snapshot: Snapshot) -> Path:
    """Write ``model`` (trained on ``snapshot``) as a bundle directory at ``path``.

    The training triples are stored because the encoder needs the message graph it was
    trained on; anything else the model needs is rebuilt from config and weights.
    """
    for kind, names in (("entity", snapshot.entities), ("relation", snapshot.relations)):
        broken = next((name for name in names if "\n" in name or "\r" in name), None)
        if broken is not None:
            raise ValueError(f"{kind} {broken!r} contains a line break and cannot be saved one per line")
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT_VERSION,
        "plugin": type(model).name,
        "hyperparameters": model.hparams.to_dict(),
        "kgserver_version": kgserver.__version__,
        "num_entities": snapshot.num_entities,
        "num_relations": snapshot.num_relations,
        "graph": snapshot.name,
    }
    (target / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # save_model (not save_file) because plugins may tie weights; it stores shared tensors once.
    save_model(model, str(target / WEIGHTS), metadata={"plugin": config["plugin"]})
    _write_lines(target / ENTITIES, snapshot.entities)
    _write_lines(target / RELATIONS, snapshot.relations)
    save_file({"triples": snapshot.train.to(torch.int64).contiguous()}, str(target / GRAPH))
    return target


def load_bundle(path: str | Path, version: str = "local") -> LoadedModel:
    """Rebuild the model in a bundle directory; refuses anything that is not plain data."""
    source = Path(path)
    _check_files(source)
    config = _read_config(source / CONFIG)
    plugin = config["plugin"]
    model_class = get_model(plugin)  # PluginNotFound names the plugin and the installed ones
    entities = _read_lines(source / ENTITIES)
    relations = _read_lines(source / RELATIONS)
    for kind, names, expected in (
        ("entities", entities, config["num_entities"]),
        ("relations", relations, config["num_relations"]),
    ):
        if len(names) != expected:
            raise UnsafeArtifact(
                f"{source}: {kind}.txt lists {len(names)} {kind} but config.json says {expected}"
            )
    triples = _read_triples(source / GRAPH, len(entities), len(relations))
    try:
        hparams = model_class.hyperparameters.from_dict(config["hyperparameters"])
    except (TypeError, ValueError) as error:
        raise UnsafeArtifact(f"{source / CONFIG}: hyperparameters do not fit plugin {plugin!r}: {error}") from None
    model = model_class(len(entities), len(relations), hparams)
    try:
        load_weights(model, str(source / WEIGHTS), strict=True)
    except SafetensorError as error:
        raise UnsafeArtifact(f"{source / WEIGHTS} is not a valid safetensors file ({error}); refusing to load it") from None
    except RuntimeError as error:
        raise UnsafeArtifact(f"{source / WEIGHTS} does not match plugin {plugin!r}: {error}") from None
    model.eval()
    return LoadedModel(
        plugin=plugin,
        model=model,
        entities=entities,
        relations=relations,
        train_triples=triples,
        version=version,
        graph_name=str(config.get("graph", "")),
        hyperparameters=hparams.to_dict(),
        kgserver_version=str(config.get("kgserver_version", "")),
    )


def _check_files(source: Path) -> None:
    """Exactly the bundle files, no more (a stray pickle is refused), no fewer."""
    if not source.is_dir():
        raise ModelNotFound(f"no model bundle at {source}: not a directory")
    present = {p.relative_to(source).as_posix(): p for p in source.rglob("*")}
    for name, entry in sorted(present.items()):
        if name in BUNDLE_FILES and entry.is_file():
            continue
        if entry.suffix.lower() in PICKLE_SUFFIXES:
            raise UnsafeArtifact(
                f"{entry}: pickle-based files are never loaded; a model bundle holds only "
                f"{', '.join(BUNDLE_FILES)} (weights as safetensors)"
            )
        raise UnsafeArtifact(f"{entry}: unexpected entry in model bundle; it may hold only {', '.join(BUNDLE_FILES)}")
    missing = [name for name in BUNDLE_FILES if name not in present]
    if missing:
        raise ModelNotFound(f"no complete model bundle at {source}: missing {', '.join(missing)}")


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UnsafeArtifact(f"{path} is not a JSON document ({error}); refusing to load it") from None
    expected = {"plugin": str, "hyperparameters": dict, "num_entities": int, "num_relations": int}
    if not isinstance(config, dict):
        raise UnsafeArtifact(f"{path}: expected a JSON object")
    for key, kind in expected.items():
        if not isinstance(config.get(key), kind):
            raise UnsafeArtifact(f"{path}: {key!r} is missing or not a {kind.__name__}")
    return config


def _read_triples(path: Path, num_entities: int, num_relations: int) -> Tensor:
    try:
        tensors = load_tensors(path.read_bytes())
    except SafetensorError as error:
        raise UnsafeArtifact(f"{path} is not a valid safetensors file ({error}); refusing to load it") from None
    triples = tensors.get("triples")
    if triples is None or triples.dtype != torch.int64 or triples.dim() != 2 or triples.shape[1] != 3:
        raise UnsafeArtifact(f"{path}: expected an int64 [n, 3] tensor named 'triples'")
    if triples.numel() and (
        triples.min() < 0
        or triples[:, [0, 2]].max() >= num_entities
        or triples[:, 1].max() >= num_relations
    ):
        raise UnsafeArtifact(f"{path}: triple ids fall outside the bundle's vocabularies")
    return triples


def _write_lines(path: Path, names: list[str]) -> None:
    path.write_bytes("".join(f"{name}\n" for name in names).encode("utf-8"))


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnsafeArtifact(f"{path} is not UTF-8 text ({error})") from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines
