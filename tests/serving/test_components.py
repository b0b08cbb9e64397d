"""The serving parts on their own: batching scorer, model holder.

The known-triple index is tested in tests/graph/test_index.py.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import pytest
import torch

from kgserver.errors import ModelNotFound
from kgserver.serving.holder import ModelHolder, ModelsNotReady
from kgserver.serving.scorer import BatchScorer, ScorerClosed
from kgserver.serving.served import ServedModel
from kgserver.tracking.bundle import load_bundle


@pytest.fixture(scope="module")
def two_versions(bundle_dir: Path) -> tuple[ServedModel, ServedModel]:
    first = ServedModel.build("toy@a", load_bundle(bundle_dir, version="toy/1"))
    second = ServedModel.build("toy@a", load_bundle(bundle_dir, version="toy/2"))
    return first, second


def test_concurrent_jobs_are_batched_and_each_gets_its_own_rows(two_versions: tuple[ServedModel, ServedModel]) -> None:
    first, second = two_versions
    scorer = BatchScorer(max_batch=64, max_wait=0.05)
    results: dict[int, list] = {}
    start = threading.Barrier(24)

    def ask(i: int) -> None:
        served = first if i % 2 else second
        start.wait()
        results[i] = scorer.predict(
            served, [i % 60, (i + 1) % 60], [i % 4, 4 + i % 4], k=3 + i % 5, filter_known=bool(i % 3)
        )

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scorer.close()
    assert scorer.stats.jobs == 24 and scorer.stats.batches < 24
    for i, rows in results.items():
        served = first if i % 2 else second
        for (ids, scores), (e, r) in zip(rows, [(i % 60, i % 4), ((i + 1) % 60, 4 + i % 4)]):
            with torch.inference_mode():
                full = served.model.score(served.entity_emb[[e]], served.relation_emb[[r]], served.entity_emb)[0]
                if i % 3:
                    _, known = served.known.lookup(torch.tensor([e]), torch.tensor([r]))
                    full[known] = float("-inf")
                expected = torch.topk(full, 3 + i % 5)
            assert ids == expected.indices.tolist()
            assert scores == pytest.approx(expected.values.tolist(), abs=1e-5)
    with pytest.raises(ScorerClosed):
        scorer.predict(first, [0], [0], 1, False)


def test_the_served_entity_table_is_column_major_and_scores_as_the_row_major_one(
    two_versions: tuple[ServedModel, ServedModel],
) -> None:
    served = two_versions[0]
    assert served.entity_emb.t().is_contiguous()
    row_major = served.entity_emb.contiguous()
    assert dataclasses.replace(served, entity_emb=row_major).entity_emb.t().is_contiguous(), "replace lays it out too"
    heads, relations = torch.arange(6) % served.num_entities, torch.arange(6) % (2 * served.num_relations)
    with torch.inference_mode():
        expected = served.model.score(row_major[heads], served.relation_emb[relations], row_major)
    answers = BatchScorer().predict(served, heads.tolist(), relations.tolist(), 5, False)
    for row, (ids, scores) in enumerate(answers):
        assert ids == torch.topk(expected[row], 5).indices.tolist()
        assert scores == pytest.approx(expected[row, ids].tolist(), abs=1e-5)


def test_a_failing_version_keeps_the_previous_one_serving(bundle_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    names = {"ref": "toy/1"}

    def build(ref: str, version: str) -> ServedModel:
        if version == "toy/2":
            raise ModelNotFound("toy/2 vanished")
        return ServedModel.build(ref, load_bundle(bundle_dir, version=version))

    holder = ModelHolder(["toy@champion"], lambda ref: names["ref"], build, poll_seconds=0)
    with pytest.raises(ModelsNotReady):
        holder.get()
    holder.load()
    assert holder.get().version == "toy/1"
    names["ref"] = "toy/2"
    with caplog.at_level(logging.ERROR):
        assert holder.poll_once() == []
    assert holder.get().version == "toy/1" and "toy/2 vanished" in caplog.text
    names["ref"] = "toy/3"
    assert holder.poll_once() == ["toy/3"]
    assert holder.get("toy@champion").version == holder.get("toy/3").version == "toy/3"
    with pytest.raises(ModelNotFound, match="toy/1"):
        holder.get("toy/1")


def test_a_busy_port_is_a_configuration_error(bundle_dir: Path) -> None:
    from kgserver.errors import ConfigurationError
    from kgserver.serving.server import KGServer, ServeConfig

    from .helpers import bundle_source, running_server

    with running_server({"toy@a": (bundle_dir, "toy/1")}) as first:
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            KGServer(ServeConfig(models=["toy@a"], port=first.port), *bundle_source({"toy@a": (bundle_dir, "toy/1")}))
    with pytest.raises(ConfigurationError, match="go together"):
        KGServer(ServeConfig(models=["toy@a"], port=0, tls_cert=bundle_dir / "config.json"), *bundle_source({}))
