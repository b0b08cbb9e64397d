"""With a store, filter_known also removes the graph's stored (valid, test) triples; labels show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kgserver.client import KGClient
from kgserver.graph import Snapshot
from kgserver.rdf.importer import import_files
from kgserver.store import open_store
from kgserver.tracking.bundle import save_bundle

from .helpers import entity, make_snapshot, relation, running_server, train_model

LABEL = "http://www.w3.org/2000/01/rdf-schema#label"


def write_graph(directory: Path, snapshot: Snapshot) -> list[Path]:
    """The snapshot's splits as N-Triples files named train/valid/test, plus English labels."""
    files = []
    for split in ("train", "valid", "test"):
        path = directory / f"{split}.nt"
        rows = getattr(snapshot, split).tolist()
        path.write_text("".join(f"<{entity(h)}> <{relation(r)}> <{entity(t)}> .\n" for h, r, t in rows))
        files.append(path)
    labels = directory / "labels.nt"
    labels.write_text(
        "".join(
            f'<{entity(i)}> <{LABEL}> "Entity {i}"@en .\n<{entity(i)}> <{LABEL}> "Ding {i}"@de .\n' for i in range(60)
        )
    )
    return [*files, labels]


def test_filter_known_uses_the_stored_graph_and_labels_come_from_it(db_url: str, tmp_path: Path) -> None:
    store = open_store(db_url)
    try:
        import_files(store, write_graph(tmp_path, make_snapshot()), "toy")
        snapshot = Snapshot.from_store(store, "toy")
    finally:
        store.close()
    bundle = save_bundle(tmp_path / "bundle", train_model(snapshot, seed=3, epochs=2), snapshot)
    iri = {i: name for i, name in enumerate(snapshot.entities)}
    known_train: dict[tuple[str, str], set[str]] = {}
    known_all: dict[tuple[str, str], set[str]] = {}
    for part in ("train", "valid", "test"):
        for h, r, t in getattr(snapshot, part).tolist():
            key = (iri[h], snapshot.relations[r])
            known_all.setdefault(key, set()).add(iri[t])
            if part == "train":
                known_train.setdefault(key, set()).add(iri[t])
    queries = [key for key in known_all if known_all[key] != known_train.get(key, set())][:6]
    assert queries, "some (head, relation) must have valid/test tails"
    n = snapshot.num_entities

    for store_url, known in ((None, known_train), (db_url, known_all)):
        with running_server({"toy@champion": (bundle, "toy/1")}, store_url=store_url) as server:
            with KGClient(server.address) as client:
                every = client.predict_tails(queries, k=n)
                kept = client.predict_tails(queries, k=n, filter_known=True)
        for query, all_rows, kept_rows in zip(queries, every.results, kept.results):
            assert [r.entity for r in kept_rows] == [
                r.entity for r in all_rows if r.entity not in known.get(query, set())
            ]

    with running_server({"toy@champion": (bundle, "toy/1")}, store_url=db_url) as server:
        head, rel = queries[0]
        command = [str(Path(sys.executable).parent / "kgserver"), "query", "tails", "--head", head, "--relation", rel]
        env = {**os.environ, "KGSERVER_HOME": str(tmp_path)}
        printed = subprocess.run(
            [*command, "-k", "3", "--server", server.address, "--db", db_url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert printed.returncode == 0, printed.stderr
        rows = json.loads(printed.stdout)["results"]
        assert [row["label"] for row in rows] == [f"Entity {row['entity'].rsplit('/', 1)[1]}" for row in rows]
        table = subprocess.run(
            [*command, "-k", "3", "--server", server.address, "--db", db_url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**env, "COLUMNS": "200"},
        )
        assert table.returncode == 0, table.stderr
        assert "label" in table.stdout and "Entity " in table.stdout
