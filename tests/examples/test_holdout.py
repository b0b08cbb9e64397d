"""examples/holdout.py splits the demo data into a training import and facts that arrive later."""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pyoxigraph
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "holdout.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("holdout", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    return module


holdout = load_script()


@pytest.fixture(scope="module")
def splits() -> dict[str, list[pyoxigraph.Triple]]:
    return holdout.read_splits()


def entities(triples: list[pyoxigraph.Triple]) -> set[object]:
    return {node for triple in triples for node in (triple.subject, triple.object)}


def test_every_shipped_triple_lands_in_exactly_one_part(splits: dict[str, list[pyoxigraph.Triple]]) -> None:
    parts = holdout.hold_out(splits)
    shipped = Counter(triple for triples in splits.values() for triple in triples)
    placed = Counter(parts.later + parts.held_back)
    for split, triples in parts.first.items():
        assert set(triples) <= set(splits[split])  # a kept triple stays in its split
        placed.update(triples)
    assert placed == shipped


def test_the_held_out_people_appear_only_later(splits: dict[str, list[pyoxigraph.Triple]]) -> None:
    parts = holdout.hold_out(splits)
    people = {pyoxigraph.NamedNode(holdout.ENTITY + qid) for qid in holdout.HELD_OUT}
    assert not people & entities([triple for triples in parts.first.values() for triple in triples])
    assert all({triple.subject, triple.object} & people for triple in parts.later)
    assert {triple.subject for triple in parts.held_back} == people
    assert {triple.predicate for triple in parts.held_back} == {holdout.CITIZENSHIP}
    assert holdout.CITIZENSHIP not in {t.predicate for t in parts.later if t.subject in people}
    # The later facts connect the new people to what the model is trained on.
    trained = entities(parts.first["train"])
    others = entities(parts.later) - people
    assert others <= trained
    assert {triple.predicate for triple in parts.later} <= {triple.predicate for triple in parts.first["train"]}


def test_a_person_the_data_cannot_support_is_refused(splits: dict[str, list[pyoxigraph.Triple]]) -> None:
    with pytest.raises(SystemExit, match="Q142 has no citizenship"):  # France: a country, no citizenship
        holdout.hold_out(splits, ["Q42", "Q142"])
    with pytest.raises(SystemExit, match="Q999999999 has no citizenship"):
        holdout.hold_out(splits, ["Q999999999"])


def test_a_person_barely_connected_to_the_trained_graph_is_refused() -> None:
    def triple(head: str, relation: str, tail: str) -> pyoxigraph.Triple:
        return pyoxigraph.Triple(
            pyoxigraph.NamedNode(holdout.ENTITY + head),
            pyoxigraph.NamedNode(f"http://www.wikidata.org/prop/direct/{relation}"),
            pyoxigraph.NamedNode(holdout.ENTITY + tail),
        )

    train = [triple("Q1", "P27", "Q30"), triple("Q2", "P106", "Q36180"), triple("Q2", "P27", "Q30")]
    train += [triple("Q1", "P106", "Q36180"), triple("Q1", "P106", "Q2"), triple("Q1", "P999", "Q30")]
    train += [triple("Q1", "P106", "Q5")]  # Q5 is in no other triple: not in the trained graph
    with pytest.raises(SystemExit, match="Q1 has 2 later triples into the trained graph, fewer than 4"):
        holdout.hold_out({"train": train, "valid": [], "test": []}, ["Q1"])
    train += [triple("Q1", "P106", "Q30"), triple("Q2", "P106", "Q1")]  # an incoming fact counts too
    assert len(holdout.hold_out({"train": train, "valid": [], "test": []}, ["Q1"]).later) == 6


def test_the_script_writes_importable_files_with_labels(tmp_path: Path) -> None:
    holdout.main(tmp_path)
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.nt"))
    assert written == ["first/test.nt", "first/train.nt", "first/valid.nt", "held-back.nt", "later.nt"]
    later = [quad.triple for quad in pyoxigraph.parse(path=str(tmp_path / "later.nt"))]
    labels = {triple.subject: triple.object for triple in later if triple.predicate == holdout.RDFS_LABEL}
    assert labels == {
        pyoxigraph.NamedNode(holdout.ENTITY + qid): pyoxigraph.Literal(label, language="en")
        for qid, label in holdout.HELD_OUT.items()
    }
