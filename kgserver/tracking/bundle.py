"""The model bundle: a trained model as JSON, safetensors and plain-text vocabularies.

A bundle is a directory holding exactly these files::

    config.json          schema version, plugin name, hyperparameters, kgserver version,
                         sizes, graph name, and the SHA-256 of every bundle file
    weights.safetensors  the model's state_dict
    entities.txt         entity IRIs in id order, one per line
    relations.txt        relation IRIs in id order, one per line
    graph.safetensors    the training triples (int64 [n, 3]) that feed the message graph

Nothing in it needs pickle, so loading a bundle runs no code from the artifact. The
loader is strict on purpose: any other file (a ``.pt``/``.pkl`` someone dropped in),
a weights file that does not parse as safetensors, or a config that is not JSON is
refused with :class:`~kgserver.errors.UnsafeArtifact` instead of being skipped, because
a bundle that was tampered with should not be served half-checked. Before the model is
built, the tensor shapes its config implies (the plugin's model constructed on torch's
``meta`` device, which allocates nothing) are compared with the weights file's header,
so a config cannot make the loader allocate more than the weights file holds; then every
file's SHA-256 is compared with the one recorded at save time (``config.json``'s own
over its canonical JSON without the ``sha256`` entry); after loading, every weight
must be finite.

``schema_version`` says how to read ``config.json``. Version 1 bundles (written
before checksums were recorded; their config says ``"format": 1``) still load, with
every check but the checksums and a warning saying so. Hyperparameters a plugin no
longer has are dropped with a warning, so a bundle saved before a hyperparameter was
removed still loads; one that mattered to the weights shows up as a shape mismatch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import struct
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
from kgserver.graph.encoding import encode_in_chunks
from kgserver.graph.snapshot import Snapshot, message_graph
from kgserver.registry import KGModel, get_model

CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
ENTITIES = "entities.txt"
RELATIONS = "relations.txt"
GRAPH = "graph.safetensors"
BUNDLE_FILES = (CONFIG, WEIGHTS, ENTITIES, RELATIONS, GRAPH)
SCHEMA_VERSION = 2  # 2: "schema_version" and "sha256" in config.json; 1: "format": 1, no checksums
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on a header
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}

log = logging.getLogger(__name__)
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
    graph_revision: int = 0
    """The store revision of ``graph_name`` training read (0: not recorded)."""
    graph_created_at: str = ""
    """When that graph was created, ISO 8601 UTC ("": not recorded)."""
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
        """Entity and relation embeddings without gradients (chunked on large graphs), computed once and cached."""
        if self._embeddings is None:
            with torch.no_grad():
                self._embeddings = encode_in_chunks(self.model, self.graph())
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
    config: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "plugin": type(model).name,
        "hyperparameters": model.hparams.to_dict(),
        "kgserver_version": kgserver.__version__,
        "num_entities": snapshot.num_entities,
        "num_relations": snapshot.num_relations,
        "graph": snapshot.name,
    }
    # The store state training read: serving treats what the store added after it as new.
    for key in ("store_revision", "store_created_at"):
        if key in snapshot.metadata:
            config[f"graph_{key.removeprefix('store_')}"] = snapshot.metadata[key]
    # save_model (not save_file) because plugins may tie weights; it stores shared tensors once.
    save_model(model, str(target / WEIGHTS), metadata={"plugin": config["plugin"]})
    _write_lines(target / ENTITIES, snapshot.entities)
    _write_lines(target / RELATIONS, snapshot.relations)
    save_file({"triples": snapshot.train.to(torch.int64).contiguous()}, str(target / GRAPH))
    digests = {name: _file_digest(target / name) for name in BUNDLE_FILES if name != CONFIG}
    config["sha256"] = {CONFIG: _config_digest(config), **digests}
    (target / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")
    return target


def load_bundle(path: str | Path, version: str = "local") -> LoadedModel:
    """Rebuild the model in a bundle directory; refuses anything that is not plain, intact data.

    The checks run cheapest first and all of them before the model is built:
    the file set, the config, the vocabularies and triples, the hyperparameters
    against the plugin's schema, the weights' header against the shapes the config
    implies, the checksums; after loading, the weights' values.
    """
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
            raise UnsafeArtifact(f"{source}: {kind}.txt lists {len(names)} {kind} but config.json says {expected}")
    triples = _read_triples(source / GRAPH, len(entities), len(relations))
    try:
        hparams, dropped = model_class.hyperparameters.from_saved(config["hyperparameters"])
    except (TypeError, ValueError) as error:
        raise UnsafeArtifact(f"{source / CONFIG}: hyperparameters do not fit plugin {plugin!r}: {error}") from None
    if dropped:
        log.warning(
            "%s: hyperparameter(s) %s are no longer known to plugin %r and were dropped",
            source / CONFIG,
            ", ".join(dropped),
            plugin,
        )
    _check_shapes(source / WEIGHTS, model_class, len(entities), len(relations), hparams, plugin)
    _verify_digests(source, config)
    model = model_class(len(entities), len(relations), hparams)
    try:
        load_weights(model, str(source / WEIGHTS), strict=True)
    except SafetensorError as error:
        raise UnsafeArtifact(
            f"{source / WEIGHTS} is not a valid safetensors file ({error}); refusing to load it"
        ) from None
    except RuntimeError as error:
        raise UnsafeArtifact(f"{source / WEIGHTS} does not match plugin {plugin!r}: {error}") from None
    _check_finite(source / WEIGHTS, model)
    model.eval()
    return LoadedModel(
        plugin=plugin,
        model=model,
        entities=entities,
        relations=relations,
        train_triples=triples,
        version=version,
        graph_name=str(config.get("graph", "")),
        graph_revision=_non_negative_int(config.get("graph_revision", 0), "graph_revision"),
        graph_created_at=str(config.get("graph_created_at", "")),
        hyperparameters=hparams.to_dict(),
        kgserver_version=str(config.get("kgserver_version", "")),
    )


def _non_negative_int(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnsafeArtifact(f"config.json: {key} must be a non-negative integer, got {value!r}")
    return value


def _check_shapes(
    path: Path, model_class: type[KGModel], num_entities: int, num_relations: int, hparams: Any, plugin: str
) -> None:
    """Compare the weights' header with the tensors the config implies, before allocating any.

    The model is built on the ``meta`` device (shapes without storage), so this is the
    plugin's own answer for any plugin. Tied tensors (one object under several names)
    are stored once, under any one of their names.
    """
    with torch.device("meta"):
        expected_model = model_class(num_entities, num_relations, hparams)
    saved_names = set(expected_model.state_dict())
    groups: dict[int, tuple[Tensor, list[str]]] = {}  # one entry per tensor object: its names
    for name, tensor in [
        *expected_model.named_parameters(remove_duplicate=False),
        *expected_model.named_buffers(remove_duplicate=False),
    ]:
        if name in saved_names:
            groups.setdefault(id(tensor), (tensor, []))[1].append(name)
    stored = {key: value for key, value in _read_header(path).items() if key != "__metadata__"}
    for tensor, names in groups.values():
        present = [name for name in names if name in stored]
        if not present:
            raise UnsafeArtifact(f"{path} does not match plugin {plugin!r}: tensor {names[0]!r} is missing")
        for name in present:
            dtype, shape = stored[name].get("dtype"), stored[name].get("shape")
            if shape != list(tensor.shape) or SAFETENSORS_DTYPES.get(str(dtype)) != tensor.dtype:
                raise UnsafeArtifact(
                    f"{path} does not match plugin {plugin!r}: tensor {name!r} is {dtype} {shape} in the file "
                    f"but config.json implies {str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"
                )
    unexpected = sorted(set(stored) - saved_names)
    if unexpected:
        raise UnsafeArtifact(
            f"{path} does not match plugin {plugin!r}: unexpected tensor(s) {', '.join(map(repr, unexpected))}"
        )


def _read_header(path: Path) -> dict[str, Any]:
    """A safetensors file's JSON header (names, dtypes, shapes, offsets), read without the tensors."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise UnsafeArtifact(f"{path} is not a valid safetensors file (bad header length); refusing to load it")
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise UnsafeArtifact(f"{path} is not a valid safetensors file ({error}); refusing to load it") from None
    if not isinstance(header, dict) or not all(isinstance(entry, dict) for entry in header.values()):
        raise UnsafeArtifact(f"{path} is not a valid safetensors file (header is not a table of tensors)")
    return header


def _verify_digests(source: Path, config: dict[str, Any]) -> None:
    """Compare every file with the SHA-256 recorded at save time (schema 2; schema 1 has none)."""
    if config["schema_version"] == 1:
        log.warning(
            "%s was saved before kgserver recorded checksums (schema 1): its files are checked "
            "for shape and content but not against checksums",
            source,
        )
        return
    recorded = config.get("sha256")
    if not isinstance(recorded, dict) or set(recorded) != set(BUNDLE_FILES):
        raise UnsafeArtifact(f"{source / CONFIG}: 'sha256' must list the checksum of each of {', '.join(BUNDLE_FILES)}")
    for name in BUNDLE_FILES:
        actual = _config_digest(config) if name == CONFIG else _file_digest(source / name)
        if recorded[name] != actual:
            raise UnsafeArtifact(
                f"{source / name} has changed since the bundle was saved (SHA-256 {actual}, recorded "
                f"{recorded[name]}); refusing to load it"
            )


def _check_finite(path: Path, model: KGModel) -> None:
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise UnsafeArtifact(
                f"{path}: tensor {name!r} holds non-finite values (NaN or infinity); refusing to serve it"
            )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON without its own ``sha256`` entry."""
    body = {key: value for key, value in config.items() if key != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


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
    """The config as a dict with ``schema_version`` set (1 for bundles that say ``"format": 1``)."""
    try:
        config = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as error:
        raise UnsafeArtifact(f"{path} is not a JSON document ({error}); refusing to load it") from None
    expected = {"plugin": str, "hyperparameters": dict, "num_entities": int, "num_relations": int}
    if not isinstance(config, dict):
        raise UnsafeArtifact(f"{path}: expected a JSON object")
    for key, kind in expected.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise UnsafeArtifact(f"{path}: {key!r} is missing or not a {kind.__name__}")
    if "schema_version" not in config and config.get("format") == 1:
        config["schema_version"] = 1
    schema = config.get("schema_version")
    if schema not in (1, SCHEMA_VERSION) or isinstance(schema, bool):
        raise UnsafeArtifact(
            f"{path}: schema_version {schema!r} is not one this kgserver reads (1 to {SCHEMA_VERSION}); "
            "a newer kgserver may have saved it"
        )
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
        triples.min() < 0 or triples[:, [0, 2]].max() >= num_entities or triples[:, 1].max() >= num_relations
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
