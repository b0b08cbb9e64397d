"""Warm before SERVING: every version answers real requests before health or a swap exposes it."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc
from kgserver.serving.holder import ModelHolder
from kgserver.serving.served import ServedModel
from kgserver.serving.server import KGServer, ServeConfig
from kgserver.tracking.bundle import load_bundle

from .helpers import NUM_ENTITIES, NUM_RELATIONS, ServerProcess, bundle_source, entity, relation


def test_loading_answers_requests_through_the_scorer_before_health_says_serving(bundle_dir: Path) -> None:
    resolve, build = bundle_source({"toy@champion": (bundle_dir, "toy/1")})
    server = KGServer(ServeConfig(models=["toy@champion"], port=0, max_k=60), resolve, build)
    server.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest()
            assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
            server.load_models()
            warmed = server.scorer.stats
            assert warmed.jobs >= 8 and warmed.rows > warmed.jobs, "one- and several-query requests, both directions"
            assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.NOT_SERVING
            server.go_live()
            assert health.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(grace=0)


def test_a_new_version_is_warmed_before_it_is_swapped_in_and_one_that_fails_warming_is_not(
    bundle_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    names = {"ref": "toy/1"}
    warmed: list[tuple[str, str]] = []  # (version warmed, version served while warming it)

    def build(ref: str, version: str) -> ServedModel:
        return ServedModel.build(ref, load_bundle(bundle_dir, version=version))

    def warm(model: ServedModel) -> None:
        served = holder.current()
        warmed.append((model.version, served[0].version if served else ""))
        if model.version == "toy/2":
            raise RuntimeError("the decoder returned the wrong shape")

    holder = ModelHolder(["toy@champion"], lambda ref: names["ref"], build, poll_seconds=0, warm=warm)
    holder.load()
    names["ref"] = "toy/2"
    with caplog.at_level(logging.ERROR):
        assert holder.poll_once() == []
        assert holder.poll_once() == []  # not warmed again while the alias still names it
    assert holder.get().version == "toy/1"
    assert caplog.text.count("the decoder returned the wrong shape") == 1
    names["ref"] = "toy/3"
    assert holder.poll_once() == ["toy/3"]
    assert warmed == [("toy/1", ""), ("toy/2", "toy/1"), ("toy/3", "toy/1")]


COLD_CALLERS = 16
COLD_REQUESTS = 1600


def p99_of_calls(address: str) -> float:
    """p99 latency (s) of :data:`COLD_REQUESTS` single-query predictions from :data:`COLD_CALLERS` threads."""
    latencies: list[float] = []

    def caller(index: int) -> None:
        with grpc.insecure_channel(address, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            predict = pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails
            for n in range(COLD_REQUESTS // COLD_CALLERS):
                query = pb.Query(entity=entity((index * 7 + n) % NUM_ENTITIES), relation=relation(n % NUM_RELATIONS))
                started = time.perf_counter()
                predict(pb.PredictRequest(queries=[query], k=10, filter_known=n % 2 == 0), timeout=30)
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(COLD_CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))]


@pytest.mark.serial
@pytest.mark.timeout(300)
def test_the_first_requests_after_serving_are_not_much_slower_than_later_ones(bundle_dir: Path, tmp_path: Path) -> None:
    # A loose bound (the machine is shared; bench/serve.py reports the figure): 3x, and 20 ms of slack.
    process = ServerProcess(
        ["--model", str(bundle_dir), "--poll-seconds", "0"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        cold = p99_of_calls(process.address)
        steady = min(p99_of_calls(process.address), p99_of_calls(process.address))
    finally:
        process.stop()
    assert cold <= 3 * steady + 0.020, f"cold p99 {cold * 1e3:.1f} ms, steady {steady * 1e3:.1f} ms"
