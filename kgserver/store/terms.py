"""RDF terms as the store keeps them: a kind, a lexical value and, for literals,
a datatype IRI and a language tag.

Every term also has a 16-byte ``key`` (a BLAKE2b digest of all four parts). The
database enforces uniqueness on the key rather than on the value because a btree
index on arbitrarily long literal text fails on PostgreSQL; the key also lets
``labels()`` find IRIs without a text index.
"""

from __future__ import annotations

import enum
import hashlib
from typing import NamedTuple

XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
RDF_LANG_STRING = "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


class TermKind(enum.IntEnum):
    """How a term's ``value`` is to be read."""

    IRI = 0
    BLANK = 1
    LITERAL = 2


class Term(NamedTuple):
    """One stored term; ``datatype`` and ``lang`` are set for literals only."""

    kind: TermKind
    value: str
    datatype: str | None = None
    lang: str | None = None

    def render(self) -> str:
        """The term as a string: an IRI as is, ``_:label``, or an N-Triples literal."""
        return render(self.kind, self.value, self.datatype, self.lang)


def term_key(kind: int, value: str, datatype: str | None = None, lang: str | None = None) -> bytes:
    """The unique key of a term (16 bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"%d\x00" % kind)
    digest.update(value.encode("utf-8", "surrogatepass"))
    if kind == TermKind.LITERAL:
        digest.update(b"\x00")
        digest.update((datatype or "").encode("utf-8"))
        digest.update(b"\x00")
        digest.update((lang or "").encode("utf-8"))
    return digest.digest()


def relation_key(iri: str) -> bytes:
    """The unique key of a relation (predicate) IRI."""
    return term_key(TermKind.IRI, iri)


_ESCAPES = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r"}


def render(kind: int, value: str, datatype: str | None, lang: str | None) -> str:
    """Render a term the way users see it in entity lists (N-Triples style for literals)."""
    if kind == TermKind.IRI:
        return value
    if kind == TermKind.BLANK:
        return f"_:{value}"
    quoted = '"' + value.translate(_ESCAPES) + '"'
    if lang:
        return f"{quoted}@{lang}"
    if datatype and datatype != XSD_STRING:
        return f"{quoted}^^<{datatype}>"
    return quoted
