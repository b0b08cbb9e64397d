"""The model plugin contract and the registry that finds plugins.

A plugin is a :class:`KGModel` subclass that registers itself with
``@register_model("name")`` in a module named by an entry point of the group
``kgserver.models``. The built-in models in ``plugins/`` are found exactly the
same way as a third-party package's, so there is no special case.

The contract is split in two so that serving can run the expensive part once:

* ``encode(graph)`` runs the GNN over the message-passing graph and returns
  ``(entity_emb [N, d], relation_emb [2R, d_r])``. Relation ids ``r + R`` are the
  inverses of ``r``; head prediction ``(?, r, t)`` is asked as ``(t, r + R, ?)``.
* ``score(h, r, t)`` is the decoder: ``h [B, d]``, ``r [B, d_r]`` and candidate
  tails ``t [C, d]`` give plausibilities ``[B, C]`` (higher is more plausible).

The message-passing graph is a DGL graph over all N entities whose edges are the
training triples and their inverses, with ``edata["rel"]`` (int64, in ``[0, 2R)``).
For neighbour-sampled training ``encode`` is given instead a list of DGL blocks
(message-flow graphs, one per layer, from a DGL neighbour sampler): input
features are those of ``blocks[0].srcdata[dgl.NID]`` and the result covers only
``blocks[-1].dstdata[dgl.NID]`` (relation embeddings always cover all ``2R``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, TypeVar

from torch import Tensor, nn

from kgserver.errors import PluginNotFound

ENTRY_POINT_GROUP = "kgserver.models"
LOSSES = ("bce", "ce")

log = logging.getLogger(__name__)


@dataclass
class Hyperparameters:
    """Base of every plugin's hyperparameters: typed fields with defaults.

    Fields shared by every trainer live here; a plugin subclasses it and adds its
    own, and may give these fields other defaults.
    ``loss`` is "bce" (binary cross-entropy per candidate) or "ce" (softmax
    cross-entropy over the candidates); see :mod:`kgserver.training.losses`.
    """

    embedding_dim: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 1024
    loss: str = "bce"
    label_smoothing: float = 0.1
    num_negatives: int = 64
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Hyperparameters":
        """Build from a (possibly partial) mapping, rejecting unknown keys."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def parse_assignments(cls, assignments: list[str]) -> "Hyperparameters":
        """Parse ``key=value`` strings (the CLI's ``--set``) using the field types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"--set expects key=value, got {item!r}")
            if key not in fields:
                raise ValueError(
                    f"unknown hyperparameter {key!r}; known: {', '.join(sorted(fields))}"
                )
            values[key] = _coerce(raw.strip(), fields[key].type, key)
        return cls(**values)


def _coerce(raw: str, annotation: Any, key: str) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    try:
        if kind == "bool":
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"hyperparameter {key!r} expects {kind}, got {raw!r}") from None
    return raw


class KGModel(nn.Module):
    """Base class of every link-prediction model plugin.

    Subclasses set the class attributes and implement :meth:`encode` and :meth:`score`.
    ``training_mode`` says how the trainer builds targets: ``"1-n"`` scores every
    entity as a tail; ``"negatives"`` scores the true tail against
    ``num_negatives`` uniformly sampled entities. Either way the hyperparameters'
    ``loss`` ("bce" or "ce") and ``label_smoothing`` choose the objective.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hyperparameters: ClassVar[type[Hyperparameters]] = Hyperparameters
    training_mode: ClassVar[Literal["1-n", "negatives"]] = "1-n"

    def __init__(self, num_entities: int, num_relations: int, hparams: Hyperparameters) -> None:
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.hparams = hparams

    def encode(self, graph: Any) -> tuple[Tensor, Tensor]:
        """Run the encoder on a DGL graph (all N entities) or a list of sampled blocks.

        Returns ``(entity_emb, relation_emb [2R, d_r])``; ``entity_emb`` is ``[N, d]``
        for a graph and ``[num_dst_nodes of the last block, d]`` for blocks.
        """
        raise NotImplementedError

    def score(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Decode: ``heads [B, d]``, ``relations [B, d_r]``, ``tails [C, d]`` -> ``[B, C]``."""
        raise NotImplementedError


M = TypeVar("M", bound=type[KGModel])

_REGISTRY: dict[str, type[KGModel]] = {}
_FAILED: dict[str, str] = {}
_entry_points_loaded = False


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`KGModel` subclass under ``name``."""

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, KGModel)):
            raise TypeError(f"@register_model({name!r}) must decorate a KGModel subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"model name {name!r} is already registered by {existing!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def load_entry_points() -> None:
    """Import every module of the ``kgserver.models`` entry-point group, once.

    A plugin that fails to import is logged with its traceback and remembered in
    :func:`failed_plugins`; the others still load.
    """
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry_point.load()
        except Exception:  # a broken plugin must not take the others down
            _FAILED[entry_point.name] = traceback.format_exc()
            log.error("model plugin %r failed to import:\n%s", entry_point.name, _FAILED[entry_point.name])


def available_models() -> dict[str, type[KGModel]]:
    """Every registered model type, by name."""
    load_entry_points()
    return dict(sorted(_REGISTRY.items()))


def failed_plugins() -> dict[str, str]:
    """Entry points that failed to import, with their tracebacks."""
    load_entry_points()
    return dict(_FAILED)


def get_model(name: str) -> type[KGModel]:
    """The model class registered under ``name``; a clear error lists the others."""
    models = available_models()
    if name not in models:
        raise PluginNotFound(name, list(models))
    return models[name]
