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

Optional parts, used to explain predictions (:mod:`kgserver.explain`); a plugin
declares each with a class flag, and one without them is explained by the
model-agnostic method (edges removed one at a time):

* ``accepts_edge_weight``: ``encode(graph, edge_weight=w)`` multiplies the message
  of every edge by its weight (``w`` is ``[E]`` for a graph, a list of ``[E_i]``
  per block). All ones must give the unweighted result, and the result must be
  differentiable in ``w``: the gradient of a score with respect to the weights
  says which edges the score depends on.
* ``reports_attention``: after ``encode``, ``attention()`` returns each layer's
  attention weights (``[E_i, heads]``, in the order of the edges of the graph or
  block that layer saw).
* ``receptive_field()``: how many hops of the message graph an entity's embedding
  depends on (the number of blocks ``encode`` takes); without it a prediction
  cannot be explained on a neighbourhood.

Optional, to embed entities added to the graph after training (live knowledge,
:mod:`kgserver.serving.live`):

* ``embeds_unseen_entities``: the plugin can learn to represent an entity from its
  neighbourhood alone. An instance can do it when :meth:`KGModel.can_embed_unseen_entities`
  says so (for the built-in plugins: trained with ``unseen_entity_rate > 0``, which
  the bundle's hyperparameters record). Such a model's ``encode`` accepts node ids
  ``>= num_entities`` (a graph with more nodes, or blocks whose ``dgl.NID`` go beyond
  the vocabulary): those are entities it never saw, and their input is the learned
  "unseen" vector :meth:`KGModel.unseen_entity_input`. A plugin without the capability
  keeps today's behaviour: a graph must have exactly ``num_entities`` nodes.
* ``aggregates_at_destination``: every layer's output at a node depends only on that
  node's input and its incoming edges with their sources' inputs (normalised by the
  node's own in-degree or a softmax over its in-edges, never by a source's degree). Then
  an edge added into a node changes layer ``l`` only within ``l - 1`` hops of it, and a
  change to the graph is re-encoded within ``receptive_field() - 1`` hops of the touched
  nodes instead of ``receptive_field()``.

Optional, for neighbour-sampled training on graphs with many entities:

* ``enable_sparse_gradients()``: from this call on, ``encode(blocks)`` gives some
  parameters a sparse gradient (``torch.sparse``, e.g. through
  ``F.embedding(..., sparse=True)``) holding rows of the block's input entities only;
  it returns their names (as in ``named_parameters``). The trainer calls it before
  neighbour-sampled training in one process and updates those parameters with
  ``torch.optim.SparseAdam`` (Adam on the rows a step touched), so a step's update
  costs what the step touched, not the size of the vocabulary. Data-parallel training
  does not call it (DDP's gradient buckets are dense); ``encode(graph)`` always gives
  dense gradients.

Optional, to train faster where the device has fast bfloat16 matrix products:

* ``trains_in_bf16``: the plugin's ``encode`` and ``score`` run correctly under
  ``torch.autocast(dtype=torch.bfloat16)``, where matrix products return bfloat16
  while parameters stay float32 (anything that needs one dtype, such as a DGL
  message-passing call, converts its operands). ``kgserver train --precision auto``
  chooses bfloat16 steps only for such a plugin; ``--precision bf16`` refuses the others.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import logging
import math
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, TypeVar

from torch import Tensor, nn

from kgserver.errors import PluginNotFound

ENTRY_POINT_GROUP = "kgserver.models"
LOSSES = ("bce", "ce")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bounds:
    """The interval a numeric hyperparameter must lie in; ``None`` leaves a side open-ended.

    ``low_open``/``high_open`` exclude the end point itself (``Bounds(0, 1, high_open=True)``
    is ``[0, 1)``). Every numeric field of a plugin's schema declares one, so that no
    value reaches torch unchecked.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above_low = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below_high = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above_low and below_high

    def describe(self) -> str:
        """``"at least 1"``, ``"greater than 0"`` or ``"in [0, 1)"``, for error messages."""
        if self.high is None:
            if self.low is None:
                return "any finite number"
            return f"{'greater than' if self.low_open else 'at least'} {self.low:g}"
        if self.low is None:
            return f"{'less than' if self.high_open else 'at most'} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


POSITIVE = Bounds(low=1)  # counts and sizes
NON_NEGATIVE = Bounds(low=0)
PROBABILITY = Bounds(low=0, high=1, high_open=True)  # dropout and smoothing: 1 would erase everything
FIELD_KINDS = ("bool", "int", "float", "str")


@dataclass
class Hyperparameters:
    """Base of every plugin's hyperparameters: typed fields with defaults, bounds and choices.

    Every field the trainer reads is declared here (a plugin may give it another
    default), so the trainer never has to guess whether a plugin has it. A plugin
    subclasses this and adds its own fields; each field is a bool, int, float or
    str, each int and float field has :class:`Bounds` in ``bounds`` and each str
    field its allowed values in ``choices``. Both class attributes are merged along
    the class hierarchy (a subclass declares only its new fields), and
    :func:`register_model` refuses a schema that leaves a field unchecked.
    Construction validates every field: its type, floats finite, bounds and choices;
    a subclass adds checks that span fields in its own ``__post_init__`` (after
    calling this one).

    ``loss`` is "bce" (binary cross-entropy per candidate) or "ce" (softmax
    cross-entropy over the candidates); see :mod:`kgserver.training.losses`.
    ``num_layers`` is the encoder depth: sampled training samples one block per layer.
    """

    embedding_dim: int = 200
    learning_rate: float = 1e-3
    batch_size: int = 1024
    loss: str = "bce"
    label_smoothing: float = 0.1
    num_negatives: int = 64
    weight_decay: float = 0.0
    num_layers: int = 1

    bounds: ClassVar[Mapping[str, Bounds]] = {
        "embedding_dim": POSITIVE,
        "learning_rate": NON_NEGATIVE,  # 0 freezes the weights (an evaluation baseline)
        "batch_size": POSITIVE,
        "label_smoothing": PROBABILITY,
        "num_negatives": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "num_layers": POSITIVE,
    }
    choices: ClassVar[Mapping[str, Collection[str]]] = {"loss": LOSSES}
    added_later: ClassVar[Mapping[str, Any]] = {}
    """Fields added after models were saved without them, each with the value that
    reproduces how such a model was built (which may differ from today's default).
    Merged along the class hierarchy like ``bounds``; read by :meth:`from_saved`."""

    def __post_init__(self) -> None:
        bounds, choices = self.declared_bounds(), self.declared_choices()
        for spec in dataclasses.fields(self):
            value = _checked_type(spec.name, getattr(self, spec.name), field_kind(spec.type))
            setattr(self, spec.name, value)
            if spec.name in bounds and value not in bounds[spec.name]:
                raise ValueError(f"{spec.name} must be {bounds[spec.name].describe()}, got {value!r}")
            allowed = choices.get(spec.name)
            if allowed is not None and value not in allowed:
                raise ValueError(f"unknown {spec.name} {value!r}: {spec.name} must be one of {', '.join(allowed)}")

    @classmethod
    def declared_bounds(cls) -> dict[str, Bounds]:
        """``bounds`` of this class and every base, the subclass's winning."""
        return _merged(cls, "bounds")

    @classmethod
    def declared_choices(cls) -> dict[str, Collection[str]]:
        """``choices`` of this class and every base, the subclass's winning."""
        return _merged(cls, "choices")

    @classmethod
    def check_schema(cls) -> None:
        """Raise :class:`TypeError` naming any field that construction could not check."""
        bounds, choices = cls.declared_bounds(), cls.declared_choices()
        for spec in dataclasses.fields(cls):
            kind = field_kind(spec.type)
            where = f"{cls.__module__}.{cls.__qualname__}.{spec.name}"
            if kind not in FIELD_KINDS:
                raise TypeError(f"hyperparameter {where} has type {kind}; a field is one of {', '.join(FIELD_KINDS)}")
            if kind in ("int", "float") and spec.name not in bounds:
                raise TypeError(f"hyperparameter {where} is numeric but declares no Bounds in `bounds`")
            if kind == "str" and spec.name not in choices:
                raise TypeError(f"hyperparameter {where} is a string but declares no allowed values in `choices`")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from a (possibly partial) mapping, rejecting unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown hyperparameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    @classmethod
    def from_saved(cls, values: Mapping[str, Any]) -> tuple[Self, list[str]]:
        """Build from a saved model's hyperparameters, dropping keys this schema no longer has.

        A model saved before a hyperparameter was removed from the plugin still loads:
        the removed keys are returned (the caller warns about them) and every kept
        value is validated as usual. A removed key that changed the architecture
        shows up as weights that do not fit. A model saved before a field was added
        gets the field's ``added_later`` value, not today's default.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        dropped = sorted(set(values) - known)
        kept = {key: value for key, value in values.items() if key in known}
        return cls(**{**_merged(cls, "added_later"), **kept}), dropped

    @classmethod
    def parse_assignments(cls, assignments: list[str]) -> Self:
        """Parse ``key=value`` strings (the CLI's ``--set``) using the field types."""
        return cls(**cls.parse_values(assignments))

    @classmethod
    def parse_values(cls, assignments: list[str]) -> dict[str, Any]:
        """The typed values of ``key=value`` strings, by field name (the fields they leave out keep
        their defaults, or get chosen by the graph's size in ``kgserver train``)."""
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
            values[key] = _coerce(raw.strip(), field_kind(fields[key].type), key)
        return values


def field_kind(annotation: Any) -> str:
    """A dataclass field's type as a name (``"int"``), whether or not annotations are strings."""
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))


def _merged(cls: type, attribute: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        merged.update(vars(klass).get(attribute, {}))
    return merged


def _checked_type(name: str, value: Any, kind: str) -> Any:
    """``value`` if it is of ``kind`` (an int is accepted, as a float, for a float field)."""
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    expected = {"bool": bool, "int": int, "float": float, "str": str}.get(kind)
    if expected is None:
        return value
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{name} must be a {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _coerce(raw: str, kind: str, key: str) -> Any:
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
    accepts_edge_weight: ClassVar[bool] = False
    reports_attention: ClassVar[bool] = False
    embeds_unseen_entities: ClassVar[bool] = False
    aggregates_at_destination: ClassVar[bool] = False
    trains_in_bf16: ClassVar[bool] = False

    def __init__(self, num_entities: int, num_relations: int, hparams: Hyperparameters) -> None:
        super().__init__()
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.hparams = hparams

    def encode(self, graph: Any, edge_weight: Any = None) -> tuple[Tensor, Tensor]:
        """Run the encoder on a DGL graph (all N entities) or a list of sampled blocks.

        Returns ``(entity_emb, relation_emb [2R, d_r])``; ``entity_emb`` is ``[N, d]``
        for a graph and ``[num_dst_nodes of the last block, d]`` for blocks.
        ``edge_weight`` is only ever passed to a plugin that sets ``accepts_edge_weight``.
        """
        raise NotImplementedError

    def attention(self) -> list[Tensor]:
        """Each layer's attention weights from the last ``encode`` (only if ``reports_attention``)."""
        raise NotImplementedError(f"model plugin {self.name!r} does not report attention")

    def receptive_field(self) -> int | None:
        """Hops of the message graph an entity's embedding depends on; None when not declared."""
        return None

    def can_embed_unseen_entities(self) -> bool:
        """Whether this instance was trained to embed an unseen entity from its neighbourhood.

        The class flag ``embeds_unseen_entities`` says the plugin can learn it; a plugin may
        make it depend on its hyperparameters (the built-in ones: ``unseen_entity_rate > 0``).
        """
        return self.embeds_unseen_entities

    def unseen_entity_input(self) -> Tensor:
        """The learned ``[d]`` input vector of an entity the model never saw (only if it can embed them)."""
        raise NotImplementedError(f"model plugin {self.name!r} cannot embed unseen entities")

    def enable_sparse_gradients(self) -> frozenset[str]:
        """Make ``encode(blocks)`` give sparse gradients; the names of the parameters that get them (none
        by default: the call changes nothing)."""
        return frozenset()

    def score(self, heads: Tensor, relations: Tensor, tails: Tensor) -> Tensor:
        """Decode: ``heads [B, d]``, ``relations [B, d_r]``, ``tails [C, d]`` -> ``[B, C]``."""
        raise NotImplementedError


M = TypeVar("M", bound=type[KGModel])
C = TypeVar("C", bound=type)

_REGISTRY: dict[str, type[KGModel]] = {}
_FAILED: dict[str, str] = {}
_entry_points_loaded = False


def claim_name(registry: dict[str, Any], name: str, cls: C, what: str) -> C:
    """Put ``cls`` into ``registry`` under ``name``, unless another class holds that name.

    Classes are the same when their module and qualified name are: re-importing a
    module (a test reloading a plugin) registers again, but two plugins choosing
    one name is an error naming both, instead of the later one silently winning.
    """
    existing = registry.get(name)
    if existing is not None and _origin(existing) != _origin(cls):
        raise ValueError(
            f"{what} name {name!r} is already registered by {_origin(existing)}; "
            f"{_origin(cls)} must choose another name"
        )
    registry[name] = cls
    return cls


def _origin(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: register a :class:`KGModel` subclass under ``name``.

    Refuses a class whose hyperparameter schema leaves a field unchecked
    (see :meth:`Hyperparameters.check_schema`).
    """

    def decorate(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, KGModel)):
            raise TypeError(f"@register_model({name!r}) must decorate a KGModel subclass")
        if not (isinstance(cls.hyperparameters, type) and issubclass(cls.hyperparameters, Hyperparameters)):
            raise TypeError(f"{_origin(cls)}.hyperparameters must be a Hyperparameters subclass")
        cls.hyperparameters.check_schema()
        claim_name(_REGISTRY, name, cls, "model")
        cls.name = name
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
