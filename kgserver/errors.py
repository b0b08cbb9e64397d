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
