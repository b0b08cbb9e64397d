"""Hostile RDF through `kgserver import`: entity expansion, over-long terms, bad graph names.

Each case runs the CLI's entry point, ``kgserver.cli.main`` (in-process, for speed;
the billion-laughs case as the installed console script, to measure its memory),
so the exit code, the one-line message and the absence of a traceback are what a
user gets. The store must be unchanged after every refusal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hostile.helpers import KGSERVER
from hostile.helpers import cli_in_process as kgserver
from kgserver.rdf.xmlentities import EXPANSION_FLOOR

RDF_OPEN = (
    '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:ex="http://example.org/">'
)
TERM_LIMIT = 16 << 20  # pyoxigraph's buffer limit for one token


def environment(home: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KGSERVER_")}
    return {**clean, "KGSERVER_HOME": str(home), "COLUMNS": "400"}


# Runs a command and writes its peak RSS (KiB) to argv[1]. A fresh, small process
# starts it, so the figure is the command's own: a child forked from the test process
# would report the test process's memory as its peak.
MEASURE = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def kgserver_measured(*args: str, home: Path, scratch: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run the console script; also return its wall time (s) and its peak RSS (MiB)."""
    peak = scratch / "peak-rss-kib"
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(peak), KGSERVER, *args],
        capture_output=True, text=True, env=environment(home), timeout=120, check=False,
    )
    return result, time.perf_counter() - started, int(peak.read_text()) / 1024


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, *phrases: str) -> None:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} missing from {lines[0]!r}"


def graphs(home: Path) -> list[dict]:
    result = kgserver("graphs", "--json", home=home)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def laughs(levels: int) -> str:
    """The classic billion-laughs document: each entity ten references to the one before."""
    declarations = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, levels + 1)
    ]
    return "\n".join(
        [
            '<?xml version="1.0"?>',
            "<!DOCTYPE rdf:RDF [",
            *declarations,
            "]>",
            RDF_OPEN,
            f'<rdf:Description rdf:about="http://example.org/s"><ex:p>&lol{levels};</ex:p></rdf:Description>',
            "</rdf:RDF>",
            "",
        ]
    )


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A KGSERVER_HOME whose store already holds one graph (so "unchanged" means something)."""
    seed = tmp_path / "seed.nt"
    seed.write_text("<http://example.org/a> <http://example.org/p> <http://example.org/b> .\n")
    home = tmp_path / "home"
    result = kgserver("import", str(seed), "--graph", "seed", home=home)
    assert result.returncode == 0, result.stderr
    return home


def test_nine_level_billion_laughs_is_refused_fast_in_little_memory(home: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "laughs9.rdf"
    bomb.write_text(laughs(9))
    assert len(bomb.read_bytes()) < 1000
    before = graphs(home)
    result, elapsed, peak_mib = kgserver_measured("import", str(bomb), "--graph", "bomb", home=home, scratch=tmp_path)
    # lol0..lol5 fit in the budget; lol6 (3,000,000 characters) is the first that does not.
    assert_one_line_error(result, 1, f"{bomb}:9:", "entities expand to more than", "refused")
    assert graphs(home) == before
    assert peak_mib < 200, peak_mib
    # The whole command, start-up (imports) included, on a machine shared with other
    # jobs: a loose bound against a runaway expansion; the refusal itself is held to
    # under a second in-process below.
    assert elapsed < 30, elapsed


@pytest.mark.serial
def test_billion_laughs_refusal_takes_under_a_second_in_process(tmp_path: Path) -> None:
    from kgserver.errors import ImportSyntaxError
    from kgserver.rdf import import_files
    from kgserver.store import open_store

    bomb = tmp_path / "laughs9.rdf"
    bomb.write_text(laughs(9))
    with open_store(f"sqlite:///{tmp_path / 'store.db'}") as store:
        started = time.perf_counter()
        with pytest.raises(ImportSyntaxError) as caught:
            import_files(store, [bomb], "bomb")
        assert time.perf_counter() - started < 1.0
        assert (caught.value.file, caught.value.line) == (str(bomb), 9)
        assert store.graphs() == []


def test_eight_level_billion_laughs_writes_nothing(home: Path, tmp_path: Path) -> None:
    bomb = tmp_path / "laughs8.rdf"
    bomb.write_text(laughs(8))
    before = graphs(home)
    result = kgserver("import", str(bomb), "--graph", "bomb", "--json", home=home)
    assert_one_line_error(result, 1, f"{bomb}:9:", "entities expand to more than")
    assert result.stdout == ""
    assert graphs(home) == before


def test_entities_used_as_namespace_abbreviations_still_import(home: Path, tmp_path: Path) -> None:
    """What OWL tools write: entities for namespaces, referenced in attributes and text."""
    owl = tmp_path / "onto.owl"
    references = "".join(
        f'<rdf:Description rdf:about="&ex;item{i}"><ex:label rdf:datatype="&xsd;string">&ex;</ex:label>'
        "</rdf:Description>\n"
        for i in range(2000)
    )
    owl.write_text(
        '<?xml version="1.0"?>\n<!DOCTYPE rdf:RDF [\n'
        '    <!ENTITY ex "http://example.org/" >\n'
        '    <!ENTITY % xsd "http://www.w3.org/2001/XMLSchema#" >\n]>\n'
        f"{RDF_OPEN}\n{references}</rdf:RDF>\n"
    )
    result = kgserver("import", str(owl), "--graph", "onto", "--json", home=home)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 2000


def test_a_declaration_after_the_root_element_is_counted_too(home: Path, tmp_path: Path) -> None:
    """The parser honours a DOCTYPE wherever it stands; so does the budget."""
    big = "x" * (EXPANSION_FLOOR // 4)
    late = tmp_path / "late.rdf"
    late.write_text(
        f'{RDF_OPEN}\n<!DOCTYPE x [<!ENTITY big "{big}">]>\n'
        f'<rdf:Description rdf:about="http://example.org/s"><ex:p>{"&big;" * 100}</ex:p></rdf:Description>\n'
        "</rdf:RDF>\n"
    )
    before = graphs(home)
    assert_one_line_error(kgserver("import", str(late), "--graph", "late", home=home), 1, f"{late}:3:")
    assert graphs(home) == before


@pytest.mark.parametrize(
    "declaration",
    ["<!ENTITY a SYSTEM \"file:///etc/passwd\">", "<!ENTITY a 'single quoted'>", "<!ENTITY\u00a0a \"x\">"],
    ids=["external", "single-quoted", "non-ascii-space"],
)
def test_entity_declarations_of_other_forms_are_refused(home: Path, tmp_path: Path, declaration: str) -> None:
    path = tmp_path / "other.rdf"
    path.write_text(
        f"<!DOCTYPE rdf:RDF [\n{declaration}\n]>\n{RDF_OPEN}\n"
        '<rdf:Description rdf:about="http://example.org/s"><ex:p>&a;</ex:p></rdf:Description></rdf:RDF>\n'
    )
    before = graphs(home)
    assert_one_line_error(kgserver("import", str(path), "--graph", "other", home=home), 1, f"{path}:2:")
    assert graphs(home) == before


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("long-literal.nt", lambda big: f'<http://example.org/s> <http://example.org/p> "{big}" .\n'),
        ("long-iri.nt", lambda big: f"<http://example.org/s> <http://example.org/p> <http://example.org/{big}> .\n"),
        ("long-literal.ttl", lambda big: f'<http://example.org/s> <http://example.org/p> """{big}""" .\n'),
        ("long-literal.jsonld", lambda big: json.dumps({"@id": "http://example.org/s", "http://example.org/p": big})),
    ],
    ids=["nt-literal", "nt-iri", "turtle", "jsonld"],
)
def test_a_term_over_16_mib_is_a_syntax_error_with_file_and_line(
    home: Path, tmp_path: Path, name: str, document: Callable[[str], str]
) -> None:
    path = tmp_path / name
    prologue = "# two lines\n# before the term\n" if not name.endswith(".jsonld") else "\n\n"
    path.write_text(prologue + document("a" * (TERM_LIMIT + 1024)))
    before = graphs(home)
    result = kgserver("import", str(path), "--graph", "long", home=home)
    assert_one_line_error(result, 1, f"{path}:3:", "longer than the parser's limit of 16 MiB")
    assert graphs(home) == before


@pytest.mark.parametrize(
    "name",
    ["x" * 300, "a/b", "x@y", "has space", "-leading-dash", "", "ünïcode", "a:b", "x" * 65],
    ids=["300-chars", "slash", "at", "space", "leading-dash", "empty", "non-ascii", "colon", "65-chars"],
)
def test_graph_names_outside_the_pattern_are_refused_before_anything_is_written(
    home: Path, tmp_path: Path, name: str
) -> None:
    data = tmp_path / "data.nt"
    data.write_text("<http://example.org/a> <http://example.org/p> <http://example.org/c> .\n")
    before = graphs(home)
    result = kgserver("import", str(data), "--graph", name, home=home)
    assert_one_line_error(result, 2, "invalid graph name", "(--graph)", "1-64 characters")
    assert graphs(home) == before


@pytest.mark.parametrize("name", ["a", "x" * 64, "CoDEx-S_v1.2", "0graph"])
def test_graph_names_inside_the_pattern_are_accepted(home: Path, tmp_path: Path, name: str) -> None:
    data = tmp_path / "data.nt"
    data.write_text("<http://example.org/a> <http://example.org/p> <http://example.org/c> .\n")
    assert kgserver("import", str(data), "--graph", name, home=home).returncode == 0
    assert name in {graph["name"] for graph in graphs(home)}
