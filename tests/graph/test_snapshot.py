"""Snapshot.from_store on both backends: stored and random splits, no leakage, fingerprints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kgserver.errors import ConfigurationError, GraphNotFound
from kgserver.graph import Snapshot
from kgserver.rdf import import_files
from kgserver.store import open_store

EX = "http://example.org/"


def _rows(count: int, seed: int) -> list[tuple[str, str, str]]:
    generator = torch.Generator().manual_seed(seed)
    heads = torch.randint(30, (count,), generator=generator).tolist()
    rels = torch.randint(3, (count,), generator=generator).tolist()
    tails = torch.randint(30, (count,), generator=generator).tolist()
    return sorted({(f"e{h}", f"r{r}", f"e{t}") for h, r, t in zip(heads, rels, tails)})


def _write(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows), encoding="utf-8")
    return path


def _ids(snapshot: Snapshot, part: torch.Tensor) -> set[tuple[str, str, str]]:
    return {
        (snapshot.entities[h][len(EX) :], snapshot.relations[r][len(EX) :], snapshot.entities[t][len(EX) :])
        for h, r, t in part.tolist()
    }


def test_stored_split_is_used_and_only_train_reaches_the_message_graph(db_url: str, tmp_path: Path) -> None:
    rows = _rows(120, seed=0)
    train, valid, test = rows[:90], rows[90:105], rows[105:]
    test = [*test, ("lonely", "r0", "e1")]  # an entity seen only in test
    extra = [("e2", "r1", "e3")] if ("e2", "r1", "e3") not in rows else [("e2", "r2", "e29")]
    files = [
        _write(tmp_path / "train.tsv", train),
        _write(tmp_path / "valid.tsv", valid),
        _write(tmp_path / "test.tsv", test),
        _write(tmp_path / "more.tsv", extra),  # no split: joins train
    ]
    with open_store(db_url) as store:
        import_files(store, files, "toy", format="tsv", base=EX)
        snapshot = Snapshot.from_store(store, "toy")
    assert snapshot.metadata["split"] == "stored"
    assert snapshot.metadata["unassigned_in_train"] == 1
    assert _ids(snapshot, snapshot.train) == set(train) | set(extra)
    assert _ids(snapshot, snapshot.valid) == set(valid)
    assert _ids(snapshot, snapshot.test) == set(test)
    assert f"{EX}lonely" in snapshot.entities
    graph = snapshot.message_graph()
    lonely = snapshot.entities.index(f"{EX}lonely")
    assert graph.num_nodes() == snapshot.num_entities
    assert graph.in_degrees(lonely) == 0 and graph.out_degrees(lonely) == 0
    src, dst = graph.edges()
    edges = set(zip(src.tolist(), graph.edata["rel"].tolist(), dst.tolist()))
    for h, r, t in torch.cat([snapshot.valid, snapshot.test]).tolist():
        assert (h, r, t) not in edges and (t, r + snapshot.num_relations, h) not in edges


def test_random_split_is_seeded_disjoint_and_follows_the_ratio(db_url: str, tmp_path: Path) -> None:
    rows = _rows(200, seed=1)
    with open_store(db_url) as store:
        import_files(store, [_write(tmp_path / "all.tsv", rows)], "toy", format="tsv", base=EX)
        first = Snapshot.from_store(store, "toy", split_ratio=(0.6, 0.2, 0.2), seed=7)
        again = Snapshot.from_store(store, "toy", split_ratio=(0.6, 0.2, 0.2), seed=7)
        other = Snapshot.from_store(store, "toy", split_ratio=(0.6, 0.2, 0.2), seed=8)
    assert first.metadata["split"] == "random" and first.metadata["split_seed"] == 7
    parts = [_ids(first, part) for part in (first.train, first.valid, first.test)]
    assert set().union(*parts) == set(rows)
    assert sum(len(part) for part in parts) == len(rows)
    n_train, n_train_valid = round(0.6 * len(rows)), round(0.8 * len(rows))
    assert [len(part) for part in parts] == [n_train, n_train_valid - n_train, len(rows) - n_train_valid]
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint()["sha256"] != other.fingerprint()["sha256"]
    assert first.fingerprint()["num_train"] == len(parts[0])


def test_fingerprint_changes_with_the_vocabulary_order() -> None:
    triples = torch.tensor([[0, 0, 1]])
    one = Snapshot("g", ["a", "b"], ["r"], triples, triples, triples)
    swapped = Snapshot("g", ["b", "a"], ["r"], triples, triples, triples)
    assert one.fingerprint()["sha256"] != swapped.fingerprint()["sha256"]
    assert one.fingerprint() == Snapshot("g", ["a", "b"], ["r"], triples.clone(), triples, triples).fingerprint()


def test_a_stored_split_without_validation_triples_is_refused(db_url: str, tmp_path: Path) -> None:
    rows = _rows(60, seed=2)
    with open_store(db_url) as store:
        import_files(
            store, [_write(tmp_path / "train.tsv", rows[:50]), _write(tmp_path / "test.tsv", rows[50:])],
            "toy", format="tsv", base=EX,
        )
        with pytest.raises(ConfigurationError, match="no valid triples in its stored split"):
            Snapshot.from_store(store, "toy")
        with pytest.raises(GraphNotFound):
            Snapshot.from_store(store, "missing")


def test_a_bad_split_ratio_is_refused(db_url: str, tmp_path: Path) -> None:
    with open_store(db_url) as store:
        import_files(store, [_write(tmp_path / "all.tsv", _rows(30, seed=3))], "toy", format="tsv", base=EX)
        with pytest.raises(ConfigurationError, match="split ratio"):
            Snapshot.from_store(store, "toy", split_ratio=(1.0, -0.5, 0.5))
