"""serving/shared.py: a set's workers hold identical embedding tables once, as read-only mappings of one file."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from kgserver.graph.snapshot import message_graph
from kgserver.graph.vocabulary import Vocabulary
from kgserver.serving.live import GraphChanges, extended, reencode
from kgserver.serving.served import ServedModel
from kgserver.serving.shared import RAM_FILESYSTEM, SET_PREFIX, SharedEmbeddings, publish, set_directory
from kgserver.serving.source import served_model
from kgserver.tracking.bundle import load_bundle

from .helpers import entity


def mapped_files(directory: Path, pid: int | str = "self") -> list[str]:
    """The files in ``directory`` that process ``pid`` maps, once per mapping."""
    with open(f"/proc/{pid}/maps") as maps:
        fields = [line.split(maxsplit=5) for line in maps]
    return [row[5].strip() for row in fields if len(row) == 6 and Path(row[5].strip()).parent == directory]


def table(seed: int, rows: int = 256, dim: int = 64) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))


def test_the_first_publisher_writes_the_file_and_the_next_maps_it(tmp_path: Path) -> None:
    own = table(0)
    first = publish(tmp_path / "a.emb", own)
    second = publish(tmp_path / "a.emb", own.clone())
    assert first.shared and second.shared
    assert [p.name for p in tmp_path.iterdir()] == ["a.emb"]
    assert (tmp_path / "a.emb").read_bytes() == own.numpy().tobytes()
    for published in (first, second):
        assert torch.equal(published.tensor, own)
        assert published.tensor.dtype == own.dtype and published.tensor.shape == own.shape
        assert published.tensor.data_ptr() != own.data_ptr()
    assert mapped_files(tmp_path).count(str(tmp_path / "a.emb")) >= 2, "each publisher serves a mapping of the one file"


def test_a_column_major_table_is_written_and_mapped_column_major(tmp_path: Path) -> None:
    own = table(0).t().contiguous().t()
    published = publish(tmp_path / "a.emb", own)
    assert published.shared
    assert torch.equal(published.tensor, own) and published.tensor.t().is_contiguous()
    assert (tmp_path / "a.emb").read_bytes() == own.t().numpy().tobytes()


def test_a_file_that_differs_is_neither_served_nor_replaced(tmp_path: Path) -> None:
    published = table(0)
    publish(tmp_path / "a.emb", published)
    other = published.clone()
    other[3, 5] = torch.nextafter(other[3, 5], torch.tensor(1.0))  # one value, one bit apart
    answer = publish(tmp_path / "a.emb", other)
    assert not answer.shared
    assert answer.tensor is other
    assert "1 of 16384 values differ" in answer.unshared
    assert (tmp_path / "a.emb").read_bytes() == published.numpy().tobytes()


def test_a_table_of_another_size_under_the_name_is_not_served(tmp_path: Path) -> None:
    publish(tmp_path / "a.emb", table(0))
    smaller = table(0, rows=10)
    answer = publish(tmp_path / "a.emb", smaller)
    assert not answer.shared and answer.tensor is smaller
    assert "bytes" in answer.unshared


def test_concurrent_publishers_end_with_one_complete_file_per_name(tmp_path: Path) -> None:
    tables = [table(seed) for seed in range(12)]
    threads = 4
    start_together = threading.Barrier(threads)
    results: list[list[bool]] = [[] for _ in range(threads)]

    def worker(index: int) -> None:
        for number, own in enumerate(tables):
            start_together.wait()
            published = publish(tmp_path / f"{number}.emb", own.clone())
            results[index].append(published.shared and torch.equal(published.tensor, own))

    running = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(60)
    assert results == [[True] * len(tables)] * threads
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.emb" for n in range(len(tables)))
    for number, own in enumerate(tables):
        assert (tmp_path / f"{number}.emb").read_bytes() == own.numpy().tobytes()


def test_an_unwritable_directory_leaves_the_table_unshared(tmp_path: Path) -> None:
    own = table(0)
    answer = publish(tmp_path / "gone" / "a.emb", own)
    assert not answer.shared and answer.tensor is own
    assert "cannot write or map" in answer.unshared


def test_the_set_directory_is_on_the_ram_filesystem_and_removed_also_on_error() -> None:
    with set_directory() as directory:
        assert directory.parent == RAM_FILESYSTEM  # this machine has one
        assert directory.name.startswith(f"{SET_PREFIX}{os.getpid()}-")
        publish(directory / "a.emb", table(0))
    assert not directory.exists()
    with pytest.raises(RuntimeError, match="boom"), set_directory() as failing:
        publish(failing / "a.emb", table(0))
        raise RuntimeError("boom")
    assert not failing.exists()


def _build(bundle_dir: Path):  # type: ignore[no-untyped-def]
    def build(ref: str, version: str) -> ServedModel:
        return served_model(ref, load_bundle(bundle_dir, version=version), None)

    return build


def test_two_workers_building_a_version_serve_one_mapping_and_let_go_of_replaced_files(
    bundle_dir: Path, tmp_path: Path
) -> None:
    build = _build(bundle_dir)
    alone = build("toy@champion", "toy/1")
    workers = [SharedEmbeddings(tmp_path).builder(build) for _ in range(2)]
    served = [worker("toy@champion", "toy/1") for worker in workers]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2, "one entity and one relation table for the set"
    for state in served:
        assert torch.equal(state.entity_emb, alone.entity_emb)
        assert state.entity_emb.t().is_contiguous(), "the mapping keeps the served (column-major) layout"
        assert torch.equal(state.relation_emb, alone.relation_emb)
    assert sorted(set(mapped_files(tmp_path))) == [str(f) for f in files]
    assert sorted(mapped_files(tmp_path)).count(str(files[0])) >= 2

    newer = workers[0]("toy@champion", "toy/2")  # the same weights under another version
    assert torch.equal(newer.entity_emb, alone.entity_emb)
    now = sorted(tmp_path.iterdir())
    assert len(now) == 2 and not set(now) & set(files), "the replaced version's files were unlinked"
    assert torch.equal(served[1].entity_emb, alone.entity_emb), "a mapping outlives its file's name"


def test_a_version_whose_tables_differ_is_served_from_each_worker_s_own_copy_with_one_warning(
    bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build = _build(bundle_dir)
    SharedEmbeddings(tmp_path).builder(build)("toy@champion", "toy/1")

    def drifting(ref: str, version: str) -> ServedModel:
        served = build(ref, version)
        return dataclasses.replace(served, entity_emb=served.entity_emb + 1e-3, relation_emb=served.relation_emb + 1e-3)

    with caplog.at_level(logging.WARNING, logger="kgserver.serving.shared"):
        served = SharedEmbeddings(tmp_path).builder(drifting)("toy@champion", "toy/1")
    assert torch.equal(served.entity_emb, build("toy@champion", "toy/1").entity_emb + 1e-3)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "embeddings of toy/1 are not shared with the other workers" in warnings[0]
    assert "not byte-identical" in warnings[0]
    assert len(list(tmp_path.iterdir())) == 2


def _changes(served: ServedModel) -> GraphChanges:
    """Three new triples among known entities: some entities' neighbourhoods change."""
    known = {tuple(t) for t in served.known_triples.tolist()}
    added = [t for t in ([h, 2, (h + 17) % 60] for h in range(60)) if tuple(t) not in known][:3]
    return GraphChanges(1, None, served.vocabulary, torch.tensor(added), {entity(0): {"": "zero"}})


def _encode_whole_graph(
    served: ServedModel, vocabulary: Vocabulary, triples: torch.Tensor, _: torch.Tensor
) -> torch.Tensor:
    """A re-encoder that gives the same bytes on every call: the encoder over the whole message graph."""
    graph = message_graph(triples, vocabulary.num_entities, vocabulary.num_relations)
    return served.model.encode(graph)[0]


def test_two_workers_extending_a_state_by_the_same_changes_share_the_reencoded_table(
    bundle_dir: Path, tmp_path: Path
) -> None:
    served = _build(bundle_dir)("toy@champion", "toy/1")
    changes = _changes(served)
    alone = extended(served, changes, _encode_whole_graph)
    assert not torch.equal(alone.entity_emb, served.entity_emb), "the changes re-encode some entities"
    workers = [SharedEmbeddings(tmp_path).reencoder(_encode_whole_graph) for _ in range(2)]
    states = [extended(served, changes, worker) for worker in workers]
    [file] = tmp_path.iterdir()
    for state in states:
        assert torch.equal(state.entity_emb, alone.entity_emb)
        assert state.entity_emb.t().is_contiguous()
    assert mapped_files(tmp_path).count(str(file)) >= 2


def test_reencoded_tables_that_differ_in_their_last_bits_stay_each_worker_s_own(
    bundle_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two workers whose re-encodings differ in the last bit (as sums in another order would):
    # not byte-identical, so not shared. The difference is made, not waited for.
    served = _build(bundle_dir)("toy@champion", "toy/1")
    changes = _changes(served)

    def last_bit_up(*arguments: Any) -> torch.Tensor:
        table = reencode(*arguments)
        return torch.nextafter(table, torch.full_like(table, float("inf")))

    with caplog.at_level(logging.WARNING, logger="kgserver.serving.shared"):
        first = extended(served, changes, SharedEmbeddings(tmp_path).reencoder(reencode))
        second = extended(served, changes, SharedEmbeddings(tmp_path).reencoder(last_bit_up))
    [file] = tmp_path.iterdir()
    assert mapped_files(tmp_path).count(str(file)) == 1, "only the worker that wrote it serves it"
    assert torch.allclose(first.entity_emb, second.entity_emb, rtol=0, atol=1e-6)
    assert not torch.equal(first.entity_emb, second.entity_emb)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "not byte-identical" in warnings[0], warnings
    assert "this worker keeps its own copy" in warnings[0]
