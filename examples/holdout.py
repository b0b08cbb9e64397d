"""Split the demo data into what the model is trained on and facts that arrive after training.

    python examples/holdout.py OUT_DIR

The demo (``examples/demo.sh``) trains on CoDEx-S without a few well-known people,
then imports what is known about them while the server runs and asks about them.
This script makes the two imports from the shipped ``examples/codex-s/{train,valid,test}.nt.gz``;
it is deterministic (a fixed list of people, input order kept) and writes:

* ``OUT_DIR/first/{train,valid,test}.nt``: every triple that touches none of
  :data:`HELD_OUT`, in its split (the file names put them there on import);
* ``OUT_DIR/later.nt``: the held-out people's triples from all three splits except
  their citizenship (``P27``), plus each one's English ``rdfs:label``;
* ``OUT_DIR/held-back.nt``: those citizenship triples, which nobody imports: they are
  the answers the demo's question about a new person should find.

Every triple of the shipped splits is in exactly one of the three. The script stops
with an error if the data no longer suits the demo: a held-out person without a
held-back citizenship, or with fewer than :data:`MIN_KNOWN_FACTS` later triples whose
other entity and relation stay in the training split.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyoxigraph

ENTITY = "http://www.wikidata.org/entity/"
CITIZENSHIP = pyoxigraph.NamedNode("http://www.wikidata.org/prop/direct/P27")
RDFS_LABEL = pyoxigraph.NamedNode("http://www.w3.org/2000/01/rdf-schema#label")
SPLITS = ("train", "valid", "test")
DATA = Path(__file__).resolve().parent / "codex-s"

HELD_OUT = {
    "Q42": "Douglas Adams",
    "Q392": "Bob Dylan",
    "Q23434": "Ernest Hemingway",
    "Q34086": "Justin Bieber",
    "Q7241": "Rabindranath Tagore",
}
"""The people left out of training: Wikidata id -> English label (Wikidata's). The shipped
data labels relations only (``examples/make_codex_s.py``), so the labels that name these
people in answers are kept here."""

MIN_KNOWN_FACTS = 4
"""Fewest later triples a held-out person needs that connect it to the trained graph:
the encoder embeds a new entity from its neighbourhood, so it needs one."""


@dataclass(frozen=True)
class Holdout:
    """The shipped triples in three disjoint parts (see the module doc)."""

    first: dict[str, list[pyoxigraph.Triple]]
    later: list[pyoxigraph.Triple]
    held_back: list[pyoxigraph.Triple]


def read_splits(data: Path = DATA) -> dict[str, list[pyoxigraph.Triple]]:
    """The triples of ``data/{train,valid,test}.nt.gz``, by split, in file order."""
    splits = {}
    for split in SPLITS:
        text = gzip.decompress((data / f"{split}.nt.gz").read_bytes())
        splits[split] = [quad.triple for quad in pyoxigraph.parse(text, format=pyoxigraph.RdfFormat.N_TRIPLES)]
    return splits


def hold_out(splits: dict[str, list[pyoxigraph.Triple]], people: Iterable[str] = HELD_OUT) -> Holdout:
    """Split ``splits`` around the entities ``people`` (Wikidata ids); checked as the module doc says."""
    held = {pyoxigraph.NamedNode(ENTITY + qid) for qid in people}
    first: dict[str, list[pyoxigraph.Triple]] = {split: [] for split in splits}
    later: list[pyoxigraph.Triple] = []
    held_back: list[pyoxigraph.Triple] = []
    for split, triples in splits.items():
        for triple in triples:
            if triple.subject in held and triple.predicate == CITIZENSHIP:
                held_back.append(triple)
            elif triple.subject in held or triple.object in held:
                later.append(triple)
            else:
                first[split].append(triple)
    _check(held, first.get("train", []), later, held_back)
    return Holdout(first, later, held_back)


def _check(
    held: set[pyoxigraph.NamedNode],
    train: list[pyoxigraph.Triple],
    later: list[pyoxigraph.Triple],
    held_back: list[pyoxigraph.Triple],
) -> None:
    trained_entities = {node for triple in train for node in (triple.subject, triple.object)}
    trained_relations = {triple.predicate for triple in train}
    for person in sorted(held, key=lambda node: node.value):
        if not any(triple.subject == person for triple in held_back):
            raise SystemExit(f"{person.value} has no citizenship triple to hold back")
        connected = [
            triple
            for triple in later
            if person in (triple.subject, triple.object)
            and triple.predicate in trained_relations
            and (triple.object if triple.subject == person else triple.subject) in trained_entities
        ]
        if len(connected) < MIN_KNOWN_FACTS:
            raise SystemExit(
                f"{person.value} has {len(connected)} later triples into the trained graph, "
                f"fewer than {MIN_KNOWN_FACTS}"
            )


def labels(people: dict[str, str] = HELD_OUT) -> list[pyoxigraph.Triple]:
    """``rdfs:label "..."@en`` of each of ``people``."""
    return [
        pyoxigraph.Triple(pyoxigraph.NamedNode(ENTITY + qid), RDFS_LABEL, pyoxigraph.Literal(label, language="en"))
        for qid, label in people.items()
    ]


def write_ntriples(path: Path, triples: list[pyoxigraph.Triple]) -> None:
    path.write_bytes(pyoxigraph.serialize(triples, format=pyoxigraph.RdfFormat.N_TRIPLES) or b"")


def main(out: Path) -> None:
    holdout = hold_out(read_splits())
    (out / "first").mkdir(parents=True, exist_ok=True)
    for split, triples in holdout.first.items():
        write_ntriples(out / "first" / f"{split}.nt", triples)
    write_ntriples(out / "later.nt", holdout.later + labels())
    write_ntriples(out / "held-back.nt", holdout.held_back)
    trained = sum(len(triples) for triples in holdout.first.values())
    print(f"{out}/first: {trained} triples without {len(HELD_OUT)} people")
    print(f"{out}/later.nt: their {len(holdout.later)} other triples and their labels")
    print(f"{out}/held-back.nt: their citizenship, imported by nobody (the answers to predict):")
    for qid, label in HELD_OUT.items():
        person = pyoxigraph.NamedNode(ENTITY + qid)
        countries = ", ".join(str(triple.object) for triple in holdout.held_back if triple.subject == person)
        print(f"  {label} ({qid}) is a citizen of {countries}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python examples/holdout.py OUT_DIR")
    main(Path(sys.argv[1]))
