"""Streaming readers: bytes in, bounded batches of store rows out.

RDF formats (N-Triples, N-Quads, Turtle, TriG, RDF/XML, JSON-LD) are parsed by
pyoxigraph's streaming parsers, which are both strict (they accept every positive
and reject every negative W3C RDF 1.1 syntax test) and fast. Its JSON-LD parser
is used too: it agrees with rdflib's on the documents in tests/rdf, streams, and
keeps one code path; remote ``@context`` URLs are refused (no network fetches
during an import), which the error message says.

Each parsed term is mapped to a store id once per document: a dict keyed by the
parser's own term objects answers repeats, and only new terms reach the
transaction's dictionary. Memory is the batch plus these dictionaries.
"""

from __future__ import annotations

import gzip
import itertools
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import pyoxigraph

from kgserver.errors import ImportSyntaxError
from kgserver.rdf.xmlliteral import RDF_XML_LITERAL, canonical_xml_literal
from kgserver.store.bulk import ImportTransaction, TripleRow

PYOXIGRAPH_FORMATS = {
    "nt": pyoxigraph.RdfFormat.N_TRIPLES,
    "nq": pyoxigraph.RdfFormat.N_QUADS,
    "ttl": pyoxigraph.RdfFormat.TURTLE,
    "trig": pyoxigraph.RdfFormat.TRIG,
    "xml": pyoxigraph.RdfFormat.RDF_XML,
    "jsonld": pyoxigraph.RdfFormat.JSON_LD,
}

# Formats whose statements can carry a graph name (the others are always default-graph).
DATASET_FORMATS = frozenset({"nq", "trig", "jsonld"})

_CORRUPT_COMPRESSION = (EOFError, gzip.BadGzipFile, zlib.error)


class _DocumentTerms:
    """Parser term -> store id, for one document (blank node labels are document-local).

    A blank node gets the store value ``b<first 16 hex digits of the document's
    SHA-256>_<n>``, ``n`` counting blank nodes in order of first appearance. Parsing
    is deterministic, so re-importing the same bytes yields the same blank nodes
    (and adds nothing), while two documents never share one by accident.
    """

    def __init__(
        self, transaction: ImportTransaction, path: str, sha256: str, format: str
    ) -> None:
        self._transaction = transaction
        self._canonical_xml = format == "xml"
        self._path = path
        self._blank_prefix = f"b{sha256[:16]}_"
        self._blank_count = 0
        self.ids: dict[object, int] = {}
        self.relation_ids: dict[object, int] = {}

    def term(self, term: object) -> int:
        """Id of a subject, object or graph name not seen before in this document."""
        kind = type(term)
        transaction = self._transaction
        if kind is pyoxigraph.NamedNode:
            term_id = transaction.iri(term.value)  # type: ignore[attr-defined]
        elif kind is pyoxigraph.BlankNode:
            term_id = transaction.blank(f"{self._blank_prefix}{self._blank_count}")
            self._blank_count += 1
        elif kind is pyoxigraph.Literal:
            value, datatype = term.value, term.datatype.value  # type: ignore[attr-defined]
            if self._canonical_xml and datatype == RDF_XML_LITERAL:
                value = canonical_xml_literal(value)
            term_id = transaction.literal(value, datatype, term.language)  # type: ignore[attr-defined]
        else:
            raise ImportSyntaxError(
                self._path, None, f"unsupported RDF term {term!r} (RDF-star triple terms are not stored)"
            )
        self.ids[term] = term_id
        return term_id

    def context(self, graph_name: object) -> int:
        """Id of a statement's graph name: 0 for the default graph."""
        if type(graph_name) is pyoxigraph.DefaultGraph:
            return 0
        term_id = self.ids.get(graph_name)
        return self.term(graph_name) if term_id is None else term_id

    def relation(self, predicate: object) -> int:
        """Id of a predicate not seen before in this document."""
        relation_id = self._transaction.relation(predicate.value)  # type: ignore[attr-defined]
        self.relation_ids[predicate] = relation_id
        return relation_id


def rdf_batches(
    stream: BinaryIO,
    format: str,
    *,
    path: str,
    sha256: str,
    base_iri: str | None,
    transaction: ImportTransaction,
    split: int | None,
    batch_size: int,
) -> Iterator[list[TripleRow]]:
    """Parse an RDF document with pyoxigraph and yield rows of at most ``batch_size``.

    The per-statement work is one list comprehension per batch: store ids are
    never 0, so ``known(term) or new(term)`` maps a term in one expression.
    """
    terms = _DocumentTerms(transaction, path, sha256, format)
    known, new = terms.ids.get, terms.term
    known_relation, new_relation = terms.relation_ids.get, terms.relation
    context = terms.context
    graph_id = transaction.graph_id
    quads = pyoxigraph.parse(stream, PYOXIGRAPH_FORMATS[format], base_iri=base_iri)
    try:
        while batch := list(itertools.islice(quads, batch_size)):
            if format in DATASET_FORMATS:
                yield [
                    (graph_id, known(s) or new(s), known_relation(p) or new_relation(p),
                     known(o) or new(o), context(g), split)
                    for s, p, o, g in batch
                ]
            else:
                yield [
                    (graph_id, known(s) or new(s), known_relation(p) or new_relation(p),
                     known(o) or new(o), 0, split)
                    for s, p, o, _ in batch
                ]
    except SyntaxError as error:
        raise ImportSyntaxError(path, error.lineno, error.msg) from None
    except _CORRUPT_COMPRESSION as error:
        raise ImportSyntaxError(path, None, f"corrupt gzip data: {error}") from None


def tsv_batches(
    stream: BinaryIO,
    *,
    path: str,
    base: str | None,
    transaction: ImportTransaction,
    split: int | None,
    batch_size: int,
) -> Iterator[list[TripleRow]]:
    """Read ``head<TAB>relation<TAB>tail`` lines and yield rows of at most ``batch_size``.

    With ``base``, each field becomes the IRI ``base + field`` and is checked to be
    a valid IRI; without it, fields are stored as given. Empty lines are skipped;
    any other line without exactly three non-empty fields is an error.
    """
    prefix = base or ""
    entity_ids: dict[str, int] = {}
    relation_ids: dict[str, int] = {}
    graph_id = transaction.graph_id
    batch: list[TripleRow] = []
    append = batch.append
    line_number = 0
    try:
        for line_number, raw_line in enumerate(stream, start=1):
            fields = raw_line.rstrip(b"\r\n").split(b"\t")
            if len(fields) != 3 or not all(fields):
                if len(fields) == 1 and not fields[0]:
                    continue
                problem = f"got {len(fields)} field(s)" if len(fields) != 3 else "a field is empty"
                raise ImportSyntaxError(
                    path, line_number,
                    f"expected head<TAB>relation<TAB>tail, {problem}: {raw_line[:200]!r}",
                )
            head_text, relation_text, tail_text = (field.decode("utf-8") for field in fields)
            head = entity_ids.get(head_text)
            if head is None:
                head = entity_ids[head_text] = transaction.iri(_tsv_iri(prefix + head_text, base, path, line_number))
            relation = relation_ids.get(relation_text)
            if relation is None:
                relation = relation_ids[relation_text] = transaction.relation(
                    _tsv_iri(prefix + relation_text, base, path, line_number)
                )
            tail = entity_ids.get(tail_text)
            if tail is None:
                tail = entity_ids[tail_text] = transaction.iri(_tsv_iri(prefix + tail_text, base, path, line_number))
            append((graph_id, head, relation, tail, 0, split))
            if len(batch) >= batch_size:
                yield batch
                batch = []
                append = batch.append
    except UnicodeDecodeError as error:
        raise ImportSyntaxError(path, line_number, f"not UTF-8: {error}") from None
    except _CORRUPT_COMPRESSION as error:
        raise ImportSyntaxError(path, None, f"corrupt gzip data: {error}") from None
    if batch:
        yield batch


def _tsv_iri(iri: str, base: str | None, path: str, line: int) -> str:
    """``iri`` itself; checked to be a valid IRI when it was built from ``--base``."""
    if base is not None:
        try:
            pyoxigraph.NamedNode(iri)
        except ValueError as error:
            raise ImportSyntaxError(path, line, f"{iri!r} is not a valid IRI: {error}") from None
    return iri
