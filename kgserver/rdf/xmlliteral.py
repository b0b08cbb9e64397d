"""Exclusive canonical form of ``rdf:parseType="Literal"`` content from RDF/XML.

RDF/XML defines such a literal's lexical form as the exclusive XML
canonicalization of the element content: a namespace declaration appears only
where a name uses it. pyoxigraph's RDF/XML parser instead copies every namespace
in scope onto each top-level element (W3C tests xml-canon-test001/002), so the
importer canonicalizes those literals here. The stdlib's C14N 2.0 emits exactly the
namespaces that are visibly used, expands empty elements and orders attributes,
which is what exclusive canonicalization requires of these fragments.
"""

from __future__ import annotations

from xml.etree.ElementTree import ParseError, canonicalize

RDF_XML_LITERAL = "http://www.w3.org/1999/02/22-rdf-syntax-ns#XMLLiteral"

_OPEN, _CLOSE = "<kgserver-fragment>", "</kgserver-fragment>"


def canonical_xml_literal(fragment: str) -> str:
    """The exclusive canonical form of an XML fragment (unchanged if it is not well-formed)."""
    try:
        wrapped = canonicalize(_OPEN + fragment + _CLOSE, with_comments=True)
    except ParseError:
        return fragment
    return wrapped[len(_OPEN) : -len(_CLOSE)]
