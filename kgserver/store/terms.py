"""RDF terms as the store keeps them (the ``terms`` table, model
:class:`kgserver.store.models.Term`): a kind, a lexical value and, for literals, a
datatype IRI and a language tag.

Every term also has a 16-byte ``key`` (a BLAKE2b digest of all four parts). The
database enforces uniqueness on the key rather than on the value because a btree
index on arbitrarily long literal text fails on PostgreSQL; the key also lets
``labels()`` find IRIs without a text index.
"""

from __future__ import annotations

import enum
import hashlib
import json

XSD_STRING = "http://www.w3.org/2001/XMLSchema#string"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


class TermKind(enum.IntEnum):
    """How a term's ``value`` is to be read."""

    IRI = 0
    BLANK = 1
    LITERAL = 2


def store_value(value: str) -> tuple[str, bool]:
    """``(stored text, escaped)``: PostgreSQL text cannot hold NUL characters, so a
    value containing one is stored JSON-escaped and flagged (on every backend, so
    that both read back the same way); every other value is stored as is."""
    if "\x00" in value:
        return json.dumps(value), True
    return value, False


def read_value(stored: str, escaped: bool) -> str:
    """The original value of a stored term (inverse of :func:`store_value`)."""
    return json.loads(stored) if escaped else stored


def term_key(kind: int, value: str, datatype: str | None = None, lang: str | None = None) -> bytes:
    """The unique key of a term (16 bytes); parts are length-prefixed so no two
    different terms can produce the same input to the digest."""
    digest = hashlib.blake2b(digest_size=16)
    parts = (value, datatype or "", lang or "") if kind == TermKind.LITERAL else (value,)
    digest.update(bytes([kind]))
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
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
