"""``import_files``: one or more files into one graph, all or nothing.

Every file of one call is read inside a single store transaction. A malformed
file raises :class:`~kgserver.errors.ImportSyntaxError` (file and, where the parser
knows it, line) and the transaction rolls back, as it does when the process is
interrupted or killed: the store is then exactly as before the call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyoxigraph

from kgserver.config import check_graph_name
from kgserver.errors import ConfigurationError
from kgserver.rdf.formats import SPLITS, detect_format, split_from_name
from kgserver.rdf.readers import rdf_batches, tsv_batches
from kgserver.rdf.sources import open_source, sha256_of
from kgserver.store import Store
from kgserver.store.models import SPLIT_CODES

DEFAULT_BATCH_SIZE = 25_000

ProgressCallback = Callable[[Path, int, int, int], None]
"""Called as ``(path, bytes_read, file_size, triples_read)`` when a file starts,
after every batch, and when it ends; sizes are on-disk (compressed) bytes."""


@dataclass
class FileSummary:
    """What one source file contributed."""

    path: str
    format: str
    split: str | None
    sha256: str
    triples: int
    added: int

    @property
    def skipped_duplicates(self) -> int:
        return self.triples - self.added


@dataclass
class ImportSummary:
    """The outcome of one committed ``import_files`` call."""

    graph: str
    seconds: float
    files: list[FileSummary] = field(default_factory=list)
    revision: int = 0
    """The graph's revision after the import (unchanged when it added nothing)."""

    @property
    def triples(self) -> int:
        return sum(file.triples for file in self.files)

    @property
    def added(self) -> int:
        return sum(file.added for file in self.files)

    @property
    def skipped_duplicates(self) -> int:
        return self.triples - self.added

    def to_json(self) -> dict[str, object]:
        """The ``--json`` form: graph, added, skipped_duplicates, seconds, per-file details."""
        return {
            "graph": self.graph,
            "added": self.added,
            "skipped_duplicates": self.skipped_duplicates,
            "seconds": round(self.seconds, 3),
            "revision": self.revision,
            "files": [
                {**asdict(file), "skipped_duplicates": file.skipped_duplicates} for file in self.files
            ],
        }


@dataclass(frozen=True)
class _Planned:
    path: Path
    format: str
    split: str | None


def import_files(
    store: Store,
    paths: Sequence[str | Path],
    graph: str,
    *,
    format: str = "auto",
    split: str | None = None,
    base: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_progress: ProgressCallback | None = None,
) -> ImportSummary:
    """Import ``paths`` into ``graph`` in one transaction; see the module docstring.

    ``graph`` must match :data:`kgserver.config.GRAPH_NAME_PATTERN`.
    ``split`` applies to every file; when None, a file whose name starts with
    ``train``/``valid``/``test`` goes to that split and any other to none.
    ``base`` is, for RDF formats, the IRI relative references resolve against
    (default: each file's ``file://`` URI); for ``tsv``, the prefix every field
    gets (default: fields are stored as given).
    """
    plan = _plan(paths, graph, format, split, base)
    started = time.perf_counter()
    summary = ImportSummary(graph=graph, seconds=0.0)
    with store.import_transaction(graph) as transaction:
        for planned in plan:
            path = planned.path
            source = str(path)
            sha256 = sha256_of(path)
            split_code = SPLIT_CODES[planned.split] if planned.split else None
            size = path.stat().st_size
            triples = 0
            if on_progress:
                on_progress(path, 0, size, 0)
            with open_source(path) as (stream, raw):
                if planned.format == "tsv":
                    batches = tsv_batches(
                        stream, path=source, base=base, transaction=transaction,
                        split=split_code, batch_size=batch_size,
                    )
                    file_base = base
                else:
                    file_base = base or path.resolve().as_uri()
                    batches = rdf_batches(
                        stream, planned.format, path=source, sha256=sha256, base_iri=file_base,
                        transaction=transaction, split=split_code, batch_size=batch_size,
                    )
                for batch in batches:
                    transaction.add_triples(batch)
                    triples += len(batch)
                    if on_progress:
                        on_progress(path, raw.tell(), size, triples)
            added = transaction.added()
            transaction.record_source(
                source=source, sha256=sha256, format=planned.format, split=split_code,
                base=file_base, triples=triples, added=added,
            )
            summary.files.append(
                FileSummary(source, planned.format, planned.split, sha256, triples, added)
            )
            if on_progress:
                on_progress(path, size, size, triples)
    summary.revision = transaction.graph_revision
    summary.seconds = time.perf_counter() - started
    return summary


def _plan(
    paths: Sequence[str | Path], graph: str, format: str, split: str | None, base: str | None
) -> list[_Planned]:
    """Check every argument before the transaction starts, so mistakes cost nothing."""
    check_graph_name(graph)
    if not paths:
        raise ConfigurationError("no files to import")
    if split is not None and split not in SPLITS:
        raise ConfigurationError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    plan = []
    for given in paths:
        path = Path(given)
        if not path.is_file():
            raise ConfigurationError(f"no such file: {path}")
        plan.append(_Planned(path, detect_format(path, format), split or split_from_name(path)))
    if base is not None and any(planned.format != "tsv" for planned in plan):
        try:
            pyoxigraph.NamedNode(base)
        except ValueError as error:
            raise ConfigurationError(f"--base {base!r} is not an absolute IRI: {error}") from None
    return plan
