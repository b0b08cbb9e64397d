"""ExplainPrediction on a real gRPC server (loopback) equals the in-process explanation;
the ``query explain`` command prints it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgserver.client import KGClient, RequestFailed
from kgserver.explain import Explainer
from kgserver.graph import Snapshot
from kgserver.serving.server import KGServer
from kgserver.tracking.bundle import LoadedModel, load_bundle, save_bundle
from tests.serving.helpers import (
    entity,
    make_snapshot,
    relation,
    running_server,
    train_model,
)

MAX_K = 50


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    return make_snapshot()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, snapshot: Snapshot) -> Path:
    return save_bundle(tmp_path_factory.mktemp("bundle") / "toy", train_model(snapshot, seed=1), snapshot)


@pytest.fixture(scope="module")
def reference(bundle: Path) -> LoadedModel:
    return load_bundle(bundle, version="toy/1")


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[KGServer]:
    with running_server({"toy@champion": (bundle, "toy/1")}, max_k=MAX_K) as running:
        yield running


@pytest.fixture()
def client(server: KGServer) -> Iterator[KGClient]:
    with KGClient(server.address) as opened:
        yield opened


def test_the_server_answers_the_in_process_explanation(
    client: KGClient, reference: LoadedModel, snapshot: Snapshot
) -> None:
    explainer = Explainer(reference.model, reference.train_triples)
    for head, rel, tail in snapshot.test[:5].tolist():
        expected = explainer.explain(head, rel, tail, k=10)
        answer = client.explain(entity(head), relation(rel), entity(tail), k=10)
        assert answer.model_version == "toy/1" and answer.store_revision == 0
        assert answer.method == expected.method == "gradient"
        assert answer.rank == expected.rank
        assert answer.score == pytest.approx(expected.score, abs=1e-5)
        assert answer.score == pytest.approx(
            client.score([(entity(head), relation(rel), entity(tail))]).scores[0], abs=1e-5
        )
        assert len(answer.evidence) == 10
        assert [item.triple for item in answer.evidence] == [
            (entity(h), relation(r), entity(t)) for h, r, t in (item.triple for item in expected.evidence)
        ]
        for got, want in zip(answer.evidence, expected.evidence):
            assert got.weight == pytest.approx(want.weight, abs=1e-5)
            assert got.labels == ("", "", "")  # the served model has no labels
        assert [path.hops for path in answer.paths] == [
            [(entity(h), relation(r), entity(t)) for h, r, t in path.hops] for path in expected.paths
        ]
        assert [path.weight for path in answer.paths] == pytest.approx(
            [path.weight for path in expected.paths], abs=1e-5
        )


def test_unknown_names_are_not_found_and_k_out_of_range_is_invalid(client: KGClient) -> None:
    for head, rel, tail, culprit in (
        ("urn:missing", relation(0), entity(1), "urn:missing"),
        (entity(0), relation(0), "urn:gone", "urn:gone"),
        (entity(0), "urn:no-relation", entity(1), "urn:no-relation"),
    ):
        with pytest.raises(RequestFailed) as failed:
            client.explain(head, rel, tail, k=5)
        assert failed.value.code == grpc.StatusCode.NOT_FOUND and culprit in failed.value.details
    for k in (0, -1, MAX_K + 1):
        with pytest.raises(RequestFailed) as failed:
            client.explain(entity(0), relation(0), entity(1), k=k)
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT and f"got {k}" in failed.value.details
    with pytest.raises(RequestFailed) as failed:
        client.explain(entity(0), relation(0), entity(1), k=5, model="nope@champion")
    assert failed.value.code == grpc.StatusCode.NOT_FOUND


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "kgserver"), "query", "explain", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "KGSERVER_HOME": str(home)},
    )


def test_query_explain_prints_score_rank_evidence_and_paths(
    client: KGClient, server: KGServer, snapshot: Snapshot, tmp_path: Path
) -> None:
    head, rel, tail = snapshot.test[0].tolist()
    triple = (entity(head), relation(rel), entity(tail))
    expected = client.explain(*triple, k=4)
    common = ["--server", server.address, "--no-labels", "-k", "4"]

    as_json = _cli(*triple, *common, "--json", home=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    payload = json.loads(as_json.stdout)
    assert payload["rank"] == expected.rank and payload["score"] == pytest.approx(expected.score)
    assert payload["triple"] == {"head": triple[0], "relation": triple[1], "tail": triple[2]}
    assert [(e["head"], e["relation"], e["tail"]) for e in payload["evidence"]] == [e.triple for e in expected.evidence]
    assert [e["weight"] for e in payload["evidence"]] == pytest.approx([e.weight for e in expected.evidence])
    assert len(payload["paths"]) == len(expected.paths)

    table = _cli(*triple, *common, home=tmp_path)
    assert table.returncode == 0, table.stderr
    assert f"filtered rank {expected.rank}" in table.stdout and "evidence" in table.stdout
    assert table.stdout.count("path ") >= len(expected.paths)

    unknown = _cli("urn:missing", triple[1], triple[2], *common, home=tmp_path)
    assert unknown.returncode != 0
    assert "NOT_FOUND" in unknown.stderr and "urn:missing" in unknown.stderr and "Traceback" not in unknown.stderr
