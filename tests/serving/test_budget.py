"""The response budget on its own: exact worst-case sizes, refusal, waiting in arrival order, timeouts."""

from __future__ import annotations

import threading
import time

import pytest

from kgserver.errors import ResponseTooLarge, ServerBusy
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.serving.budget import SMALL_ANSWER_BYTES, ResponseBudget
from kgserver.serving.served import ServedModel
from kgserver.tracking.bundle import load_bundle

from .helpers import long_iri_snapshot, random_bundle

MiB = 2**20


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """A version whose IRIs have many lengths (and multi-byte characters), so the k longest matter."""
    snapshot = long_iri_snapshot(300, 60)
    snapshot.entities = [
        iri[: 30 + (i * 37) % 400] + "é" * (i % 7) + f"/{i}" for i, iri in enumerate(snapshot.entities * 8)
    ][:300]
    bundle = random_bundle(tmp_path_factory.mktemp("mixed") / "bundle", snapshot)
    return ServedModel.build("mixed@a", load_bundle(bundle, version="mixed/12"))


@pytest.mark.parametrize("queries, k", [(1, 1), (3, 17), (2, 128), (5, 300), (1, 5000)])
def test_the_prediction_bound_is_the_size_of_the_worst_answer(mixed: ServedModel, queries: int, k: int) -> None:
    budget = ResponseBudget(128 * MiB, 64 * MiB, 1.0)
    longest = sorted(mixed.entities, key=lambda iri: len(iri.encode()), reverse=True)[:k]
    worst = pb.PredictResponse(
        results=[pb.Predictions(entities=[pb.ScoredEntity(entity=iri, score=-1.5) for iri in longest])] * queries,
        model_version=mixed.version,
    )
    assert budget.predict_bytes(mixed, queries, k) == worst.ByteSize()


def test_the_embedding_and_score_bounds_hold_their_answers(mixed: ServedModel) -> None:
    budget = ResponseBudget(128 * MiB, 64 * MiB, 1.0)
    iris = mixed.entities[:7]
    embeddings = pb.GetEntityEmbeddingsResponse(
        embeddings=[pb.Embedding(entity=iri, values=[0.5] * mixed.embedding_dim) for iri in iris],
        model_version=mixed.version,
    )
    assert budget.embeddings_bytes(mixed, iris) == embeddings.ByteSize()
    scores = pb.ScoreTriplesResponse(scores=[0.25] * 9, model_version=mixed.version)
    assert budget.scores_bytes(mixed, 9) == scores.ByteSize()


def test_an_answer_above_the_limit_is_refused_naming_the_limit() -> None:
    transport = ResponseBudget(128 * MiB, 64 * MiB, 1.0)
    with pytest.raises(ResponseTooLarge, match="gRPC message size limit") as raised, transport.reserve(64 * MiB + 1):
        pass
    assert (raised.value.size, raised.value.limit) == (64 * MiB + 1, 64 * MiB)
    memory = ResponseBudget(8 * MiB, 64 * MiB, 1.0)
    with pytest.raises(ResponseTooLarge, match="--response-memory-mb"), memory.reserve(8 * MiB + 1):
        pass
    assert memory.in_flight == transport.in_flight == 0


def test_reservations_wait_in_arrival_order_and_time_out_as_busy() -> None:
    budget = ResponseBudget(10 * MiB, 64 * MiB, 5.0)
    order: list[str] = []
    release = threading.Event()

    def hold(name: str, size: int) -> None:
        with budget.reserve(size):
            order.append(name)
            release.wait(10)

    first = threading.Thread(target=hold, args=("first", 8 * MiB))
    first.start()
    while budget.in_flight == 0:
        time.sleep(0.01)
    waiting = [
        threading.Thread(target=hold, args=(name, size)) for name, size in (("big", 9 * MiB), ("medium", 1 * MiB))
    ]
    for thread in waiting:
        thread.start()
        time.sleep(0.1)  # arrival order: big before medium (which would fit now, but must not overtake)
    with pytest.raises(ServerBusy, match="no room within 0.2 s"), budget.reserve(2 * MiB, deadline_in=0.7):
        pass
    budget.wait_seconds = 0.1  # a call without a deadline waits this long
    with pytest.raises(ServerBusy, match="no room within 0.1 s"), budget.reserve(2 * MiB):
        pass
    with budget.reserve(SMALL_ANSWER_BYTES):  # a small answer never waits
        assert order == ["first"]
    release.set()
    for thread in [first, *waiting]:
        thread.join()
    assert order == ["first", "big", "medium"]
    assert budget.in_flight == 0 and budget.peak <= 10 * MiB
