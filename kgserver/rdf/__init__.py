"""RDF in: format detection, streaming parsers, and the all-or-nothing import.

pyoxigraph parses every RDF format (N-Triples, N-Quads, Turtle, TriG, RDF/XML,
JSON-LD); ``tsv`` is the benchmark format ``head<TAB>relation<TAB>tail``.

The format helpers are imported eagerly (they are light, and the CLI needs them
to build ``--help``); the importer, which pulls in pyoxigraph, SQLAlchemy and
numpy, only when first used.
"""

from __future__ import annotations

from typing import Any

from kgserver.rdf.formats import FORMATS, SPLITS, detect_format, split_from_name

__all__ = [
    "FORMATS",
    "SPLITS",
    "FileSummary",
    "ImportSummary",
    "detect_format",
    "import_files",
    "split_from_name",
]

_LAZY = {"FileSummary", "ImportSummary", "import_files"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from kgserver.rdf import importer

        return getattr(importer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
