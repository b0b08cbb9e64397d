"""Streaming readers: bytes in, bounded batches of store rows out.

RDF formats (N-Triples, N-Quads, Turtle, TriG, RDF/XML, JSON-LD) are parsed by
pyoxigraph's streaming parsers, which are both strict (they accept every positive
and reject every negative W3C RDF 1.1 syntax test) and fast. Its JSON-LD parser
is used too: it agrees with rdflib's on the documents in tests/rdf, streams, and
keeps one code path; remote ``@context`` URLs are refused (no network fetches
during an import), which the error message says.

Each parsed term is mapped to a store id once per document: a dict keyed by the
parser's own term objects answers repeats, and only new terms reach the
transaction's dictionary. Memory is the batch plus these dictionaries; what a
document can make the parser allocate is bounded too: a term is at most the
parser's buffer limit, and RDF/XML entity expansion is capped
(:mod:`kgserver.rdf.xmlentities`). Every failure to read a document is an
:class:`~kgserver.errors.ImportSyntaxError` naming the file and the line.
"""

from __future__ import annotations

import gzip
import io
import itertools
import re
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import pyoxigraph

from kgserver.errors import ImportSyntaxError
from kgserver.rdf.xmlentities import EntityBoundedStream
from kgserver.rdf.xmlliteral import RDF_XML_LITERAL, canonical_xml_literal
from kgserver.store.bulk import ImportTransaction, TripleRow
from kgserver.store.models import DEFAULT_CONTEXT

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

# pyoxigraph's MemoryError when one token (an IRI, a literal) outgrows its buffer.
_TERM_TOO_LONG = re.compile(r"Reached the buffer maximal size of (\d+)")


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
        """Id of a subject, object or graph name not seen before in this document.

        The branches test ``type(term) is`` (cheaper than ``isinstance`` on this, the
        hottest path of an import), which mypy does not narrow by: hence the
        ``attr-defined`` ignores below.
        """
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
        """Id of a statement's graph name (``DEFAULT_CONTEXT`` for the default graph)."""
        if type(graph_name) is pyoxigraph.DefaultGraph:
            return DEFAULT_CONTEXT
        term_id = self.ids.get(graph_name)
        return self.term(graph_name) if term_id is None else term_id

    def relation(self, predicate: object) -> int:
        """Id of a predicate (a ``pyoxigraph.NamedNode``) not seen before in this document."""
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
    source = io.BufferedReader(EntityBoundedStream(stream, path)) if format == "xml" else stream
    quads = pyoxigraph.parse(source, PYOXIGRAPH_FORMATS[format], base_iri=base_iri)
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
                     known(o) or new(o), DEFAULT_CONTEXT, split)
                    for s, p, o, _ in batch
                ]
        transaction.record_prefixes(quads.prefixes)
    except SyntaxError as error:
        line = error.lineno or _line_at(stream, source.tell(), path)
        raise ImportSyntaxError(path, line, _printable(error.msg)) from None
    except MemoryError as error:
        too_long = _TERM_TOO_LONG.search(str(error))
        if too_long is None:
            raise
        limit = int(too_long.group(1))
        raise ImportSyntaxError(
            path, _line_at(stream, source.tell(), path),
            f"a term (IRI or literal) is longer than the parser's limit of {limit >> 20} MiB",
        ) from None
    except _CORRUPT_COMPRESSION as error:
        raise ImportSyntaxError(path, None, f"corrupt gzip data: {error}") from None


def _printable(message: str) -> str:
    """The parser's message on one line: control characters it quotes from the
    document (NUL, CR, LF, ...) escaped."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in message)


def _line_at(stream: BinaryIO, position: int, path: str) -> int:
    """The line of byte ``position`` of ``stream`` (where the parser had read up to when
    it failed). Only called on the way to an error: it rereads the stream from the start."""
    try:
        stream.seek(0)
        newlines = 0
        while position > 0:
            chunk = stream.read(min(position, 1 << 20))
            if not chunk:
                break
            newlines += chunk.count(b"\n")
            position -= len(chunk)
        return newlines + 1
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
            append((graph_id, head, relation, tail, DEFAULT_CONTEXT, split))
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
