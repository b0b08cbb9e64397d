"""Property-based import of arbitrary and mutated documents, for every reader.

Whatever the bytes, ``import_files`` either succeeds or raises
:class:`~kgserver.errors.ImportSyntaxError` naming the file and a line within it,
and a refused import leaves every table of the store as it was. Runs are
deterministic (``derandomize``), bounded (``MAX_EXAMPLES`` per strategy and
format, a per-example deadline) and offline, on a real SQLite store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgserver.errors import ImportSyntaxError
from kgserver.rdf import import_files
from kgserver.store import Store, open_store

MAX_EXAMPLES = 50

EX = "http://example.org/"
VALID = {
    "nt": (
        f'<{EX}a> <{EX}p> <{EX}b> .\n_:x <{EX}q> "text"@en .\n'
        f'<{EX}b> <{EX}r> "12"^^<http://www.w3.org/2001/XMLSchema#integer> .\n'
    ),
    "nq": f'<{EX}a> <{EX}p> <{EX}b> <{EX}g> .\n<{EX}a> <{EX}p> "x" .\n_:b <{EX}p> _:c <{EX}g> .\n',
    "ttl": (
        f"@prefix ex: <{EX}> .\n@base <{EX}> .\nex:a ex:p ex:b , [ ex:q \"v\" ] ;\n"
        '  ex:list ( 1 2.5 "three" ) .\n<rel> a ex:Thing .\n'
    ),
    "trig": f"@prefix ex: <{EX}> .\nex:g {{ ex:a ex:p ex:b . }}\n{{ ex:c ex:p ex:d . }}\n",
    "xml": (
        '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [<!ENTITY ex "http://example.org/">]>\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">\n'
        '  <rdf:Description rdf:about="&ex;a">\n    <ex:p rdf:resource="&ex;b"/>\n'
        '    <ex:q xml:lang="en">text &amp; more</ex:q>\n  </rdf:Description>\n</rdf:RDF>\n'
    ),
    "jsonld": json.dumps(
        {
            "@context": {"ex": EX, "knows": {"@id": "ex:knows", "@type": "@id"}},
            "@id": "ex:a",
            "knows": ["ex:b", "ex:c"],
            "ex:name": {"@value": "A", "@language": "en"},
        },
        indent=1,
    ),
    "tsv": "Q1\tP31\tQ5\nQ2\tP31\tQ5\n\nQ5\tP279\tQ6\n",
}
FORMATS = list(VALID)


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` after one to five random edits: delete, insert, replace or duplicate a
    span, or cut the end off."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 5))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 16)))
        edit = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate"]))
        if edit == "delete":
            del data[start:end]
        elif edit == "insert":
            data[start:start] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "replace":
            data[start:end] = draw(st.binary(min_size=1, max_size=8))
        elif edit == "duplicate":
            data[start:start] = data[start:end]
        else:
            del data[start:]
    return bytes(data)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One SQLite store for a module's examples, holding a graph from the start."""
    directory = tmp_path_factory.mktemp("properties")
    seed = directory / "seed.nt"
    seed.write_text(VALID["nt"])
    with open_store(f"sqlite:///{directory / 'store.db'}") as opened:
        import_files(opened, [seed], "seed")
        yield opened


def check_import(
    store: Store, table_counts: Callable[[Store], dict[str, int]], directory: Path, format: str, data: bytes
) -> None:
    path = directory / f"document.{format}"
    path.write_bytes(data)
    before = table_counts(store)
    try:
        import_files(store, [path], "fuzzed", format=format)
    except ImportSyntaxError as error:
        assert error.file == str(path)
        # Parsers end a line at LF, CR or CRLF.
        line_breaks = len(re.findall(rb"\r\n|\r|\n", data))
        assert error.line is not None and 1 <= error.line <= line_breaks + 1, (error.line, str(error))
        assert str(error).isprintable(), repr(str(error))
        assert str(error).startswith(f"{path}:{error.line}: ")
        assert table_counts(store) == before


PROPERTY_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("format", FORMATS)
def test_arbitrary_bytes(
    store: Store, table_counts: Callable[[Store], dict[str, int]],
    tmp_path_factory: pytest.TempPathFactory, format: str,
) -> None:
    directory = tmp_path_factory.mktemp(f"bytes-{format}")

    @PROPERTY_SETTINGS
    @given(data=st.binary(max_size=512))
    def check(data: bytes) -> None:
        check_import(store, table_counts, directory, format, data)

    check()


@pytest.mark.parametrize("format", FORMATS)
def test_mutated_valid_documents(
    store: Store, table_counts: Callable[[Store], dict[str, int]],
    tmp_path_factory: pytest.TempPathFactory, format: str,
) -> None:
    directory = tmp_path_factory.mktemp(f"mutated-{format}")
    original = VALID[format].encode()
    check_import(store, table_counts, directory, format, original)  # the starting point imports
    assert "fuzzed" in {info.name for info in store.graphs()}

    @PROPERTY_SETTINGS
    @given(data=mutated(original))
    def check(data: bytes) -> None:
        check_import(store, table_counts, directory, format, data)

    check()
