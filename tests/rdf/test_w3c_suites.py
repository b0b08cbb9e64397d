"""The W3C RDF 1.1 test suites, driven from each suite's manifest.ttl, through the store.

For every entry of ``mf:entries``:

* positive syntax tests must import;
* evaluation tests must import, and the statements read back from the store must
  be isomorphic to ``mf:result`` (blank node labels aside; rdflib's isomorphism
  over the stored quads, named graphs encoded so they take part in the matching);
* negative syntax (and negative evaluation) tests must fail with
  ``ImportSyntaxError`` and leave every table of the store exactly as it was.

Each suite runs as one test that records its pass count (printed in the terminal
summary by tests/conftest.py) and fails listing every failing entry by name
with the reason. Nothing is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
import rdflib
from rdflib import BNode, Literal, URIRef
from rdflib.collection import Collection
from rdflib.compare import isomorphic

from kgserver.errors import ImportSyntaxError
from kgserver.rdf import import_files
from kgserver.store import Store, TermKind, open_store

MF = rdflib.Namespace("http://www.w3.org/2001/sw/DataAccess/tests/test-manifest#")
RDFT = rdflib.Namespace("http://www.w3.org/ns/rdftest#")
QUAD = rdflib.Namespace("urn:kgserver-test:quad#")
XSD_STRING = rdflib.URIRef("http://www.w3.org/2001/XMLSchema#string")

# rdflib's own Dataset.quads() uses an API it deprecated; not this project's concern.
pytestmark = pytest.mark.filterwarnings("ignore:Dataset.default_context is deprecated:DeprecationWarning")

SUITES = {
    "rdf-n-triples": "nt",
    "rdf-n-quads": "nq",
    "rdf-turtle": "ttl",
    "rdf-trig": "trig",
    "rdf-xml": "xml",
}


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "positive", "eval" or "negative"
    action: Path
    base: str | None
    result: Path | None


def manifest_entries(suite_dir: Path) -> list[Entry]:
    """The entries of the suite's manifest, in manifest order."""
    manifest = suite_dir / "manifest.ttl"
    graph = rdflib.Graph().parse(manifest, format="turtle")
    node = graph.value(predicate=rdflib.RDF.type, object=MF.Manifest, any=False)
    # Turtle, TriG and RDF/XML name the base their tests assume; N-Triples and
    # N-Quads have no relative IRIs and name none (the importer's default applies).
    assumed_base = graph.value(node, MF.assumedTestBase)
    entries = []
    for test in Collection(graph, graph.value(node, MF.entries)):
        test_type = str(graph.value(test, rdflib.RDF.type)).rsplit("#", 1)[1]
        if "Negative" in test_type:
            kind = "negative"
        elif test_type.endswith("Eval"):
            kind = "eval"
        elif test_type.endswith("PositiveSyntax"):
            kind = "positive"
        else:
            raise AssertionError(f"{test}: unknown test type {test_type}")
        action = _local_path(graph.value(test, MF.action))
        result = graph.value(test, MF.result)
        entries.append(
            Entry(
                name=str(graph.value(test, MF.name)),
                kind=kind,
                action=action,
                base=None if assumed_base is None
                else str(assumed_base) + action.relative_to(suite_dir).as_posix(),
                result=_local_path(result) if result is not None else None,
            )
        )
    return entries


def _local_path(uri: rdflib.term.Node) -> Path:
    return Path(unquote(urlparse(str(uri)).path))


def _normal_literal(literal: Literal) -> Literal:
    """RDF 1.1 literal identity: xsd:string is the plain literal, language tags ignore case."""
    if literal.language:
        return Literal(str(literal), lang=literal.language.lower())
    if literal.datatype is None or literal.datatype == XSD_STRING:
        return Literal(str(literal))
    return Literal(str(literal), datatype=literal.datatype)


def _from_store(term: Any) -> rdflib.term.Node:  # conftest's StoredTerm
    if term.kind == TermKind.IRI:
        return URIRef(term.value)
    if term.kind == TermKind.BLANK:
        return BNode(term.value)
    return _normal_literal(Literal(term.value, lang=term.lang, datatype=None if term.lang else term.datatype))


def _normal(node: rdflib.term.Node) -> rdflib.term.Node:
    return _normal_literal(node) if isinstance(node, Literal) else node


def _encode(quads: Iterator[tuple]) -> rdflib.Graph:
    """Default-graph triples as they are; each named-graph quad as a blank node with
    its four parts, so that isomorphism also matches graph names and blank nodes
    shared across graphs."""
    graph = rdflib.Graph()
    for subject, predicate, obj, context in quads:
        if context is None:
            graph.add((subject, predicate, obj))
        else:
            quad = BNode()
            graph.add((quad, QUAD.subject, subject))
            graph.add((quad, QUAD.predicate, predicate))
            graph.add((quad, QUAD.object, obj))
            graph.add((quad, QUAD.graph, context))
    return graph


def stored_graph(quads: list[tuple]) -> rdflib.Graph:
    """The stored quads of a graph (the ``stored_quads`` fixture's answer) as rdflib terms."""
    return _encode(
        (_from_store(s), URIRef(p), _from_store(o), None if c is None else _from_store(c))
        for s, p, o, c in quads
    )


def expected_graph(result: Path) -> rdflib.Graph:
    """The expected result, parsed by rdflib (independent of the parser under test)."""
    dataset = rdflib.Dataset()
    dataset.parse(result, format="nquads" if result.suffix == ".nq" else "nt")
    quads = set()
    for subject, predicate, obj, context in dataset.quads((None, None, None, None)):
        name = getattr(context, "identifier", context)
        if name is None or name == rdflib.graph.DATASET_DEFAULT_GRAPH_ID:
            name = None
        quads.add((_normal(subject), predicate, _normal(obj), name))
    return _encode(iter(quads))


def _difference(stored: rdflib.Graph, expected: rdflib.Graph) -> str:
    def ground(graph: rdflib.Graph) -> set[str]:
        return {
            " ".join(term.n3() for term in triple)
            for triple in graph
            if not any(isinstance(term, BNode) for term in triple)
        }

    missing = sorted(ground(expected) - ground(stored))[:3]
    extra = sorted(ground(stored) - ground(expected))[:3]
    return (
        f"not isomorphic: {len(stored)} stored vs {len(expected)} expected triples; "
        f"missing {missing}, unexpected {extra}"
    )


@dataclass(frozen=True)
class StoreFixtures:
    """The conftest's ``table_counts`` and ``stored_quads``, passed down to ``run_entry``."""

    table_counts: Callable[[Store], dict[str, int]]
    stored_quads: Callable[[Store, str], list[tuple]]


def graph_name(suite: str, entry: Entry) -> str:
    """The entry's graph: the suite and a digest of the test name (names can be longer
    than a graph name may be)."""
    return f"{suite}.{hashlib.sha256(entry.name.encode()).hexdigest()[:16]}"


def run_entry(store: Store, suite: str, format: str, entry: Entry, fixtures: StoreFixtures) -> str | None:
    """None if the entry passes, else the reason it fails."""
    graph = graph_name(suite, entry)
    if entry.kind == "negative":
        before = fixtures.table_counts(store)
        try:
            import_files(store, [entry.action], graph, format=format, base=entry.base)
        except ImportSyntaxError as error:
            if not str(error).strip():
                return "rejected, but with an empty message"
            after = fixtures.table_counts(store)
            if after != before or graph in {info.name for info in store.graphs()}:
                return f"rejected, but the store changed: {before} -> {after}"
            return None
        return "accepted a negative syntax test"
    try:
        import_files(store, [entry.action], graph, format=format, base=entry.base)
    except ImportSyntaxError as error:
        return f"rejected: {error}"
    if entry.kind == "eval":
        assert entry.result is not None
        stored = stored_graph(fixtures.stored_quads(store, graph))
        expected = expected_graph(entry.result)
        if not isomorphic(stored, expected):
            return _difference(stored, expected)
    return None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def suite_store(request: pytest.FixtureRequest, database_factory) -> Iterator[Store]:  # type: ignore[no-untyped-def]
    with database_factory(request.param) as url:
        store = open_store(url)
        try:
            yield store
        finally:
            store.close()


@pytest.fixture(autouse=True)
def _faithful_literals(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compare lexical forms as written ("01"^^xsd:integer is not "1"^^xsd:integer)."""
    monkeypatch.setattr(rdflib, "NORMALIZE_LITERALS", False)


@pytest.mark.parametrize("suite", list(SUITES))
def test_w3c_suite(
    suite: str, suite_store: Store, shared_data: Path, summary_lines: Callable[[str, list[str]], None],
    table_counts: Callable, stored_quads: Callable,
) -> None:
    entries = manifest_entries(shared_data / "rdf-tests" / "rdf11" / suite)
    assert entries, f"{suite}: manifest lists no tests"
    fixtures = StoreFixtures(table_counts, stored_quads)
    failures = []
    for entry in entries:
        reason = run_entry(suite_store, suite, SUITES[suite], entry, fixtures)
        if reason is not None:
            failures.append(f"{suite} {entry.name} ({entry.kind}): {reason}")
    backend, passed = suite_store.engine.dialect.name, len(entries) - len(failures)
    summary_lines(
        "W3C RDF 1.1 test suites",
        [f"{backend:10} {suite:14} {passed:4d}/{len(entries):<4d} passed", *(f"    FAILED {f}" for f in failures)],
    )
    assert not failures, f"{len(failures)} of {len(entries)} failed:\n" + "\n".join(failures)
