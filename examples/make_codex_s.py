"""Build the demo data in examples/codex-s/ from the CoDEx-S release.

    python examples/make_codex_s.py [CODEX_S_DIR]     (default: ../shared/datasets/codex-s)

Reads the release's ``{train,valid,test}.tsv.gz`` (Wikidata ids, ``Q42<TAB>P31<TAB>Q5``)
and ``relations.en.json`` and writes, next to this script:

* ``codex-s/{train,valid,test}.nt.gz``: the triples as N-Triples with Wikidata IRIs,
  entities ``http://www.wikidata.org/entity/Q..`` and relations as Wikidata's
  direct-claim properties ``http://www.wikidata.org/prop/direct/P..``;
* ``codex-s/labels.nt.gz``: the English label of every relation used, as
  ``rdfs:label "..."@en``;
* ``codex-s/LICENSE``: the dataset's MIT license, copied unchanged.

Output is byte-for-byte reproducible (gzip without timestamps, input order kept).
"""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyoxigraph

ENTITY = "http://www.wikidata.org/entity/"
PROPERTY = "http://www.wikidata.org/prop/direct/"
RDFS_LABEL = pyoxigraph.NamedNode("http://www.w3.org/2000/01/rdf-schema#label")
SPLITS = ("train", "valid", "test")

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent / ".." / "shared" / "datasets" / "codex-s"


def read_split(path: Path) -> Iterator[tuple[str, str, str]]:
    """The (head, relation, tail) Wikidata ids of one split file."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise SystemExit(f"{path}:{number}: expected 3 tab-separated fields")
            yield fields[0], fields[1], fields[2]


def write_ntriples(path: Path, triples: Iterable[pyoxigraph.Triple]) -> int:
    """Serialize ``triples`` as gzipped N-Triples without a gzip timestamp; returns the count."""
    triples = list(triples)
    data = pyoxigraph.serialize(triples, format=pyoxigraph.RdfFormat.N_TRIPLES)
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(data)
    return len(triples)


def main(source: Path) -> None:
    target = HERE / "codex-s"
    target.mkdir(exist_ok=True)
    used_relations: dict[str, None] = {}
    for split in SPLITS:
        ids = list(read_split(source / f"{split}.tsv.gz"))
        used_relations.update(dict.fromkeys(relation for _, relation, _ in ids))
        count = write_ntriples(
            target / f"{split}.nt.gz",
            (
                pyoxigraph.Triple(
                    pyoxigraph.NamedNode(ENTITY + head),
                    pyoxigraph.NamedNode(PROPERTY + relation),
                    pyoxigraph.NamedNode(ENTITY + tail),
                )
                for head, relation, tail in ids
            ),
        )
        print(f"{split}.nt.gz: {count} triples")
    labels = json.loads((source / "relations.en.json").read_text(encoding="utf-8"))
    missing = [relation for relation in used_relations if relation not in labels]
    if missing:
        raise SystemExit(f"relations.en.json has no label for {missing}")
    count = write_ntriples(
        target / "labels.nt.gz",
        (
            pyoxigraph.Triple(
                pyoxigraph.NamedNode(PROPERTY + relation),
                RDFS_LABEL,
                pyoxigraph.Literal(labels[relation]["label"], language="en"),
            )
            for relation in sorted(used_relations, key=lambda pid: int(pid[1:]))
        ),
    )
    print(f"labels.nt.gz: {count} relation labels")
    shutil.copyfile(source / "LICENSE", target / "LICENSE")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE.resolve())
