"""Importing files: counts, idempotence, all-or-nothing, formats, splits, literals, blank nodes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import rdflib
from rdflib.compare import isomorphic

from kgserver.errors import ConfigurationError, ImportSyntaxError
from kgserver.rdf import detect_format, import_files, split_from_name
from kgserver.store import GraphInfo, Store, TermKind, open_store

EX = "http://example.org/"
CODEX_COUNTS = {"entities": 2034, "relations": 42, "train": 32888, "valid": 1827, "test": 1828}


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode("utf-8") if isinstance(content, str) else content
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def graph_info(store: Store, name: str) -> GraphInfo:
    (info,) = [info for info in store.graphs() if info.name == name]
    return info


def assert_codex_counts(store: Store, graph: str) -> None:
    info = graph_info(store, graph)
    stored = store.read_graph(graph)
    assert (info.entities, len(stored.entities)) == (CODEX_COUNTS["entities"],) * 2
    assert (info.relations, len(stored.relations)) == (CODEX_COUNTS["relations"],) * 2
    for code, split in enumerate(("train", "valid", "test")):
        assert info.triples[split] == CODEX_COUNTS[split]
        assert int((stored.splits == code).sum()) == CODEX_COUNTS[split]
    assert info.triples["none"] == 0


def test_codex_s_tsv_with_split_counts_and_reimport_adds_nothing(
    db_url: str, shared_data: Path, table_counts: Callable[[Store], dict[str, int]]
) -> None:
    codex = shared_data / "datasets" / "codex-s"
    with open_store(db_url) as store:
        for split in ("train", "valid", "test"):
            summary = import_files(store, [codex / f"{split}.tsv.gz"], "codex", split=split)
            assert summary.added == CODEX_COUNTS[split] and summary.skipped_duplicates == 0
        assert_codex_counts(store, "codex")
        before = table_counts(store)
        again = import_files(store, [codex / "valid.tsv.gz"], "codex", split="valid")
        assert (again.added, again.skipped_duplicates) == (0, CODEX_COUNTS["valid"])
        after = table_counts(store)
        assert {k: v for k, v in after.items() if k != "imports"} == {
            k: v for k, v in before.items() if k != "imports"
        }
        assert after["imports"] == before["imports"] + 1  # the log records every import


def test_shipped_demo_data_gives_the_codex_s_counts(db_url: str) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "codex-s"
    files = sorted(examples.glob("*.gz"))
    assert [f.name for f in files] == ["labels.nt.gz", "test.nt.gz", "train.nt.gz", "valid.nt.gz"]
    with open_store(db_url) as store:
        summary = import_files(store, files, "codex")
        assert summary.added == 32888 + 1827 + 1828 + 42
        assert_codex_counts(store, "codex")
        assert graph_info(store, "codex").literal_triples == 42
        labels = store.labels("codex", ["http://www.wikidata.org/prop/direct/P19"])
        assert labels == {"http://www.wikidata.org/prop/direct/P19": "place of birth"}
        assert import_files(store, files, "codex").added == 0


def test_malformed_last_file_leaves_the_store_exactly_as_before(
    db_url: str, tmp_path: Path, table_counts: Callable[[Store], dict[str, int]]
) -> None:
    good_tsv = write(tmp_path / "a.tsv", "x\tp\ty\ny\tp\tz\n")
    good_nt = write(tmp_path / "b.nt.gz", f"<{EX}s> <{EX}p> <{EX}o> .\n")
    bad = write(
        tmp_path / "c.ttl",
        f"@prefix ex: <{EX}> .\nex:a ex:b ex:c .\nex:a ex:b ex:d .\nex:a ex:b \"unterminated .\n",
    )
    with open_store(db_url) as store:
        import_files(store, [good_nt], "existing")
        before = table_counts(store)
        existing = store.read_graph("existing")
        with pytest.raises(ImportSyntaxError) as caught:
            import_files(store, [good_tsv, good_nt, bad], "existing")
        assert caught.value.file == str(bad) and caught.value.line == 4
        assert str(caught.value).startswith(f"{bad}:4: ")
        with pytest.raises(ImportSyntaxError):
            import_files(store, [good_tsv, bad], "brand-new")
        assert table_counts(store) == before
        assert "brand-new" not in {info.name for info in store.graphs()}
        assert store.read_graph("existing").triples.tolist() == existing.triples.tolist()


@pytest.mark.parametrize(
    ("name", "content", "line", "message"),
    [
        ("two-fields.tsv", "a\tb\tc\na\tb\n", 2, "expected head<TAB>relation<TAB>tail"),
        ("empty-field.tsv", "a\tb\tc\n\na\t\tc\n", 3, "a field is empty"),
        ("latin1.tsv", b"a\tb\tc\n\xe9\tb\tc\n", 2, "not UTF-8"),
        ("bad-iri.nt", "<http://a> <http://b> <not an iri> .\n", 1, "Invalid IRI"),
    ],
)
def test_syntax_errors_name_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, line: int, message: str,
    table_counts: Callable[[Store], dict[str, int]],
) -> None:
    path = write(tmp_path / name, content)
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        with pytest.raises(ImportSyntaxError, match=message) as caught:
            import_files(store, [path], "g")
        assert (caught.value.file, caught.value.line) == (str(path), line)
        assert table_counts(store)["triples"] == 0


def test_corrupt_gzip_is_a_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "data.nt.gz"
    content = "".join(f"<http://a/{i}> <http://b> <http://c/{i * 7919}> .\n" for i in range(5000))
    compressed = gzip.compress(content.encode())
    path.write_bytes(compressed[: len(compressed) // 2])
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        with pytest.raises(ImportSyntaxError, match="corrupt gzip"):
            import_files(store, [path], "g")


def test_tsv_base_makes_iris_and_is_validated(tmp_path: Path) -> None:
    path = write(tmp_path / "kg.tsv", "Q1\tP31\tQ5\n")
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        import_files(store, [path], "raw")
        import_files(store, [path], "iris", base="http://www.wikidata.org/entity/")
        assert store.read_graph("raw").entities == ["Q1", "Q5"]
        assert store.read_graph("iris").relations == ["http://www.wikidata.org/entity/P31"]
        with pytest.raises(ImportSyntaxError, match="not a valid IRI"):
            import_files(store, [write(tmp_path / "sp.tsv", "a b\tp\tc\n")], "bad", base="http://x/")


def test_blank_nodes_are_scoped_per_document_and_reimport_is_idempotent(tmp_path: Path) -> None:
    first = write(tmp_path / "one.ttl", f"_:a <{EX}p> [ <{EX}q> _:a ] .\n")
    second = write(tmp_path / "two.ttl", f"_:a <{EX}p> [ <{EX}q> _:a ] .\n# another document\n")
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        assert import_files(store, [first], "g").added == 2
        assert import_files(store, [first], "g").added == 0  # same bytes: same blank nodes
        assert import_files(store, [second], "g").added == 2  # same labels, other document
        graph = store.read_graph("g")
        assert len(graph.entities) == 4 and all(e.startswith("_:") for e in graph.entities)


def test_literals_are_stored_as_written(db_url: str, tmp_path: Path, stored_quads: Callable) -> None:
    ttl = (
        f'<{EX}s> <{EX}int> "007"^^<http://www.w3.org/2001/XMLSchema#integer> ;\n'
        f'  <{EX}text> "line\\nbreak \\"quoted\\" \\u0000 nul" ;\n'
        f'  <{EX}lang> "colour"@en-GB ;\n'
        f'  <{EX}plain> "007" .\n'
    )
    with open_store(db_url) as store:
        import_files(store, [write(tmp_path / "lit.ttl", ttl)], "lit")
        objects = {predicate: obj for _, predicate, obj, _ in stored_quads(store, "lit")}
        assert objects[f"{EX}int"].value == "007"
        assert objects[f"{EX}int"].datatype == "http://www.w3.org/2001/XMLSchema#integer"
        assert objects[f"{EX}text"].value == 'line\nbreak "quoted" \x00 nul'
        assert objects[f"{EX}lang"].lang == "en-gb"  # language tags are case-insensitive
        assert objects[f"{EX}plain"].datatype == "http://www.w3.org/2001/XMLSchema#string"
        assert all(obj.kind == TermKind.LITERAL for obj in objects.values())
        assert store.read_graph("lit").triples.shape == (0, 3)
        assert len(store.read_graph("lit", include_literals=True).triples) == 4


JSONLD_DOCUMENTS = [
    {
        "@context": {
            "name": "http://xmlns.com/foaf/0.1/name",
            "knows": {"@id": "http://xmlns.com/foaf/0.1/knows", "@type": "@id"},
        },
        "@id": "http://example.org/a",
        "name": "Alice",
        "knows": ["http://example.org/b", {"name": "Anonymous"}],
    },
    {
        "@context": {
            "@vocab": "http://example.org/v#",
            "@language": "en",
            "xsd": "http://www.w3.org/2001/XMLSchema#",
            "age": {"@type": "xsd:integer"},
            "tags": {"@container": "@list"},
            "label": {"@container": "@language"},
        },
        "@graph": [
            {"@id": "http://example.org/x", "@type": "Thing", "age": "42", "title": "Hello",
             "tags": ["a", "b"], "label": {"fr": "bonjour", "de": "hallo"}},
            {"@id": "_:n1", "parent": {"@id": "http://example.org/x"}, "score": 1.5, "flag": True},
        ],
    },
    {
        "@context": {"@base": "http://example.org/dir/",
                     "p": {"@id": "http://example.org/p", "@type": "@id"},
                     "q": {"@reverse": "http://example.org/q"}},
        "@id": "relative",
        "p": "../other",
        "q": {"@id": "http://example.org/r"},
    },
]


@pytest.mark.filterwarnings("ignore:ConjunctiveGraph is deprecated:DeprecationWarning")  # inside rdflib
@pytest.mark.parametrize("document", JSONLD_DOCUMENTS, ids=["foaf", "graph-list-language", "base-reverse"])
def test_jsonld_import_agrees_with_rdflib(tmp_path: Path, document: dict, stored_quads: Callable) -> None:
    """The evidence for parsing JSON-LD with pyoxigraph: rdflib's JSON-LD parser reads the same graph."""
    path = write(tmp_path / "doc.jsonld", json.dumps(document))
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        import_files(store, [path], "doc")
        stored = rdflib.Graph()
        for subject, predicate, obj, _ in stored_quads(store, "doc"):
            stored.add((_node(subject), rdflib.URIRef(predicate), _node(obj)))
    expected = rdflib.Graph().parse(path, format="json-ld")
    normalised = rdflib.Graph()
    for triple in expected:
        normalised.add(tuple(_node_from_rdflib(term) for term in triple))
    assert len(stored) == len(normalised) > 0
    assert isomorphic(stored, normalised)


def _node(term):  # type: ignore[no-untyped-def]
    if term.kind == TermKind.IRI:
        return rdflib.URIRef(term.value)
    if term.kind == TermKind.BLANK:
        return rdflib.BNode(term.value)
    if term.lang:
        return rdflib.Literal(term.value, lang=term.lang)
    if term.datatype == str(rdflib.XSD.string):
        return rdflib.Literal(term.value)
    return rdflib.Literal(term.value, datatype=rdflib.URIRef(term.datatype))


def _node_from_rdflib(term):  # type: ignore[no-untyped-def]
    if isinstance(term, rdflib.Literal) and term.datatype == rdflib.XSD.string:
        return rdflib.Literal(str(term))
    return term


def test_remote_jsonld_context_is_refused_clearly(tmp_path: Path) -> None:
    path = write(tmp_path / "remote.jsonld", '{"@context": "https://schema.org/", "@id": "http://a", "name": "x"}')
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        with pytest.raises(ImportSyntaxError, match="remote context"):
            import_files(store, [path], "g")


def test_format_and_split_detection(tmp_path: Path) -> None:
    assert detect_format(Path("train.nt.gz")) == "nt"
    assert detect_format(Path("x.owl")) == "xml"
    assert detect_format(Path("x.TTL")) == "ttl"
    assert detect_format(Path("x.data"), "tsv") == "tsv"
    with pytest.raises(ConfigurationError, match="pass --format"):
        detect_format(Path("x.data"))
    with pytest.raises(ConfigurationError, match="unknown format"):
        detect_format(Path("x.nt"), "n3")
    assert split_from_name(Path("train.nt.gz")) == "train"
    assert split_from_name(Path("valid-2020.ttl")) == "valid"
    assert split_from_name(Path("Test_part1.tsv")) == "test"
    assert split_from_name(Path("training.nt")) is None
    assert split_from_name(Path("labels.nt.gz")) is None

    nt = f"<{EX}a> <{EX}p> <{EX}b> .\n"
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        import_files(store, [write(tmp_path / "valid.nt", nt)], "by-name")
        import_files(store, [write(tmp_path / "valid2.nt", nt)], "forced", split="test")
        import_files(store, [write(tmp_path / "data.triples", nt)], "explicit", format="nt")
        assert store.read_graph("by-name").splits.tolist() == [1]
        assert store.read_graph("forced").splits.tolist() == [2]
        assert store.read_graph("explicit").splits.tolist() == [-1]


def test_arguments_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    path = write(tmp_path / "a.nt", f"<{EX}a> <{EX}p> <{EX}b> .\n")
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        with pytest.raises(ConfigurationError, match="no such file"):
            import_files(store, [path, tmp_path / "missing.nt"], "g")
        with pytest.raises(ConfigurationError, match="unknown split"):
            import_files(store, [path], "g", split="dev")
        with pytest.raises(ConfigurationError, match="not an absolute IRI"):
            import_files(store, [path], "g", base="relative/base")
        with pytest.raises(ConfigurationError, match="graph name"):
            import_files(store, [path], " ")
        assert store.graphs() == []
