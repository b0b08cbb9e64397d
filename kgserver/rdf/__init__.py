"""RDF in: format detection, streaming parsers, and the all-or-nothing import.

pyoxigraph parses every RDF format (N-Triples, N-Quads, Turtle, TriG, RDF/XML,
JSON-LD); ``tsv`` is the benchmark format ``head<TAB>relation<TAB>tail``.
"""

from __future__ import annotations

from kgserver.rdf.formats import FORMATS, SPLITS, detect_format, split_from_name
from kgserver.rdf.importer import FileSummary, ImportSummary, import_files

__all__ = [
    "FORMATS",
    "SPLITS",
    "FileSummary",
    "ImportSummary",
    "detect_format",
    "import_files",
    "split_from_name",
]
