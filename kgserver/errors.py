"""Typed errors, raised where a fault is found and translated once at the edge.

The CLI turns a :class:`KGServerError` into a message and a non-zero exit code;
the gRPC servicer turns it into a status code. Nothing in between catches them.
"""

from __future__ import annotations


class KGServerError(Exception):
    """Base of every error kgserver reports to a user."""

    exit_code: int = 1


class ConfigurationError(KGServerError):
    """A setting (URL, path, device, option) cannot be used as given."""

    exit_code = 2


class SchemaOutOfDate(KGServerError):
    """The database schema is behind this kgserver's migrations."""


class ImportSyntaxError(KGServerError):
    """An RDF or TSV file is malformed; names the file and, where known, the line."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file = file
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {message}")


class GraphNotFound(KGServerError):
    """No graph of that name is in the store."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"graph {name!r} does not exist")


class UnknownEntity(KGServerError):
    """An entity IRI is not in the model's vocabulary."""

    def __init__(self, iri: str) -> None:
        self.iri = iri
        super().__init__(f"unknown entity: {iri}")


class UnknownRelation(KGServerError):
    """A relation IRI is not in the model's vocabulary."""

    def __init__(self, iri: str) -> None:
        self.iri = iri
        super().__init__(f"unknown relation: {iri}")


class PluginNotFound(KGServerError):
    """No model plugin is registered under that name."""

    def __init__(self, name: str, available: list[str]) -> None:
        self.name = name
        self.available = available
        names = ", ".join(sorted(available)) or "none"
        super().__init__(f"no model plugin named {name!r}; registered: {names}")


class ModelNotFound(KGServerError):
    """A model reference (NAME@ALIAS, NAME/VERSION, runs:/...) resolves to nothing."""


class UnsafeArtifact(KGServerError):
    """A model artifact would need pickle (or is otherwise not a plain tensor file)."""


class TrackingUnavailable(KGServerError):
    """The MLflow tracking server or store cannot be reached."""


class ModelNotServed(ModelNotFound):
    """A request names a model (reference or version) that this server does not serve."""

    def __init__(self, name: str, serving: list[str]) -> None:
        self.name = name
        self.serving = serving
        super().__init__(f"model {name!r} is not served here; serving: {', '.join(serving)}")


class ResponseTooLarge(KGServerError):
    """A request's worst-case answer is larger than the server may send or build at once."""

    def __init__(self, size: int, limit: int, budget: str) -> None:
        self.size = size
        self.limit = limit
        self.budget = budget
        super().__init__(
            f"the answer could take up to {size:,} bytes, more than the {limit:,}-byte response budget "
            f"({budget}); ask for fewer queries or a smaller k"
        )


class ServerBusy(KGServerError):
    """The server could not make room for an answer before the call's wait ran out."""


class ExplanationUnavailable(KGServerError):
    """A prediction cannot be explained by this model (it does not declare what the explanation needs)."""


class StoreUnavailable(KGServerError):
    """The store's database cannot be opened: unreachable server, missing database,
    a SQLite path that cannot be created, a file that is not a database. Names the
    URL (password hidden) and the reason."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot open the store {url}: {reason}")


class StoreLocked(KGServerError):
    """Another process held the store's write lock for longer than the lock timeout
    (``KGSERVER_LOCK_TIMEOUT``). A temporary condition: the exit code is 75
    (EX_TEMPFAIL), so a script can tell it from a failure and retry."""

    exit_code = 75

    def __init__(self, url: str, action: str, waited: float) -> None:
        self.url = url
        self.action = action
        self.waited = waited
        super().__init__(
            f"{action}: the store {url} is locked by another writer (an import or a graph "
            f"deletion) and stayed locked for {waited:g} s; retry when it has finished, or "
            "let it wait longer with KGSERVER_LOCK_TIMEOUT=SECONDS"
        )


class WorkerExited(KGServerError):
    """A serving worker process ended on its own (failed to load, crashed), so the whole set was stopped."""

    def __init__(self, index: int, pid: int, code: int) -> None:
        self.index = index
        self.pid = pid
        self.code = code
        self.exit_code = code if code > 0 else 1
        cause = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        super().__init__(
            f"serving worker {index} (pid {pid}) {cause}; the other workers were stopped (see the log above)"
        )


class DistributedTrainingFailed(KGServerError):
    """A worker of a multi-process training job failed or died; the whole job was stopped."""


class EntityNotEmbeddable(UnknownEntity):
    """An entity the store added after training that this model cannot embed from its
    neighbourhood (its plugin does not encode unseen entities): retraining is needed."""

    def __init__(self, iri: str) -> None:
        super().__init__(iri)
        self.args = (
            f"entity {iri} was added to the store after training and is not embeddable by this model; retrain",
        )


class RelationNeedsRetraining(UnknownRelation):
    """A relation the store has but the model never saw: no encoder can guess its
    embedding, so retraining is needed."""

    def __init__(self, iri: str) -> None:
        super().__init__(iri)
        self.args = (f"relation {iri} was added to the store after training; retraining is needed to use it",)


class UnseenEntityUnsupported(KGServerError):
    """The served model cannot embed entities it never saw (its plugin lacks the capability, or it
    was trained with ``unseen_entity_rate`` 0); they need a model retrained on the current graph."""

    def __init__(self, model: str, plugin: str, count: int, example: str) -> None:
        self.model = model
        self.plugin = plugin
        self.count = count
        super().__init__(
            f"model {model!r} ({plugin}) cannot embed {count} entit{'y' if count == 1 else 'ies'} it never saw "
            f"(such as {example}): it was not trained to represent unseen entities; retrain it on the current "
            "graph (the built-in plugins learn it with unseen_entity_rate > 0)"
        )


class UnseenRelationUnsupported(KGServerError):
    """New triples use a relation the served model has no embedding for; only retraining can add it."""

    def __init__(self, model: str, relation: str) -> None:
        self.model = model
        self.relation = relation
        super().__init__(
            f"model {model!r} has no embedding for relation {relation}: the relation vocabulary must stay "
            "that of the model; retrain it on the current graph"
        )
