"""The server follows the store: imports while serving reach answers within the refresh interval.

Real store (SQLite and PostgreSQL), real trained model, real gRPC server on a
loopback port, real imports through ``import_files``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from kgserver.client import KGClient, RequestFailed
from kgserver.errors import ExplanationUnavailable
from kgserver.graph import Snapshot
from kgserver.graph.vocabulary import Vocabulary
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.rdf.importer import import_files
from kgserver.serving.served import ServedModel
from kgserver.serving.server import KGServer, ServeConfig
from kgserver.serving.source import served_model
from kgserver.serving.watcher import Reencoder, StoreWatcher
from kgserver.store import open_store
from kgserver.tracking.bundle import load_bundle, save_bundle

from .helpers import entity, make_snapshot, relation, train_model
from .test_store import LABEL, write_graph

REFRESH = 0.2
NEW = "http://example.org/entity/new"


@contextlib.contextmanager
def following_server(bundle: Path, store_url: str | None, reencode=None) -> Iterator[KGServer]:  # type: ignore[no-untyped-def]
    """A server of the toy bundle with English labels by default, following ``store_url``."""

    def build(ref: str, version: str) -> ServedModel:
        return served_model(ref, load_bundle(bundle, version=version), store_url, "en")

    server = KGServer(ServeConfig(models=["toy@champion"], port=0, max_k=100), lambda ref: "toy/1", build)
    watcher = StoreWatcher(server.holder, store_url, REFRESH, reencode) if store_url else None
    server.start()
    try:
        server.load()
        if watcher is not None:
            watcher.start()
        yield server
    finally:
        if watcher is not None:
            watcher.stop()
        server.stop(grace=1)


@pytest.fixture()
def stored_bundle(db_url: str, tmp_path: Path) -> Path:
    """The toy graph imported (revision 1), and a model trained on it."""
    with open_store(db_url) as store:
        import_files(store, write_graph(tmp_path, make_snapshot()), "toy")
        snapshot = Snapshot.from_store(store, "toy")
    return save_bundle(tmp_path / "bundle", train_model(snapshot, seed=3, epochs=1), snapshot)


def import_lines(db_url: str, path: Path, lines: list[str]) -> int:
    path.write_text("".join(lines), encoding="utf-8")
    with open_store(db_url) as store:
        import_files(store, [path], "toy")
        return store.revision("toy")


def wait_for_revision(client: KGClient, revision: int, timeout: float = 10 * REFRESH + 5) -> None:
    deadline = time.monotonic() + timeout
    while client.predict_tails([(entity(0), relation(0))], 1).store_revision < revision:
        assert time.monotonic() < deadline, f"the server did not reach store revision {revision}"
        time.sleep(REFRESH / 4)


def neighbour_mean(
    served: ServedModel, vocabulary: Vocabulary, message: torch.Tensor, touched: torch.Tensor
) -> torch.Tensor:
    """A stand-in re-encoder for the plumbing: old rows kept, a new entity gets the mean of its neighbours."""
    emb = torch.zeros(vocabulary.num_entities, served.embedding_dim)
    emb[: served.num_entities] = served.entity_emb
    for new in range(served.num_entities, vocabulary.num_entities):
        near = torch.cat([message[message[:, 0] == new, 2], message[message[:, 2] == new, 0]])
        emb[new] = served.entity_emb[near[near < served.num_entities]].mean(0)
    return emb


def test_imported_triples_are_filtered_and_labelled_within_the_refresh_interval(
    db_url: str, stored_bundle: Path, tmp_path: Path
) -> None:
    with following_server(stored_bundle, db_url, neighbour_mean) as server, KGClient(server.address) as client:
        first = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True)
        assert first.store_revision == 1
        answer = first.results[0][0]
        assert answer.label == f"Entity {answer.entity.rsplit('/', 1)[1]}"  # the server's default: English
        german = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True, language="de")
        assert german.results[0][0].label.startswith("Ding ")
        assert not any(r.new_entity for r in first.results[0])
        chosen = answer.entity

        revision = import_lines(db_url, tmp_path / "more.nt", [
            f"<{entity(0)}> <{relation(3)}> <{chosen}> .\n",
            f"<{entity(0)}> <{relation(3)}> <{NEW}> .\n",
            f"<{NEW}> <{relation(0)}> <{entity(1)}> .\n",
            f'<{NEW}> <{LABEL}> "Neu"@de .\n<{NEW}> <{LABEL}> "New thing" .\n',
            f"<{entity(2)}> <http://example.org/relation/unseen> <{entity(3)}> .\n",
        ])
        assert revision == 2
        wait_for_revision(client, 2)
        after = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True)
        assert after.store_revision == 2
        assert chosen not in {r.entity for r in after.results[0]}
        assert NEW not in {r.entity for r in after.results[0]}  # known now, so filtered
        unfiltered = client.predict_tails([(entity(1), relation(0))], 61, filter_known=False, language="de")
        new_rows = [r for r in unfiltered.results[0] if r.entity == NEW]
        assert len(new_rows) == 1 and new_rows[0].new_entity and new_rows[0].label == "Neu"
        # The response budget's bound still covers answers with labels and new entities.
        sent = pb.PredictResponse(
            results=[pb.Predictions(entities=[
                pb.ScoredEntity(entity=r.entity, score=r.score, label=r.label, new_entity=r.new_entity)
                for r in unfiltered.results[0]
            ])],
            model_version=unfiltered.model_version,
            store_revision=unfiltered.store_revision,
        )
        assert server.budget.predict_bytes(server.holder.get(), 1, 61) >= sent.ByteSize()
        # A new entity can be asked about as head, tail, triple and embedding.
        english = client.predict_heads([(entity(1), relation(0))], 61)
        assert [r.label for r in english.results[0] if r.entity == NEW] == ["New thing"]  # untagged fallback
        assert client.predict_tails([(NEW, relation(0))], 3).store_revision == 2
        assert client.score([(NEW, relation(0), entity(1))]).store_revision == 2
        embedded = client.embeddings([NEW])
        assert embedded.store_revision == 2 and len(embedded.vectors[0]) > 0
        with pytest.raises(RequestFailed) as caught:
            client.predict_tails([(entity(2), "http://example.org/relation/unseen")], 3)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND and "retraining is needed" in str(caught.value)

        # A re-import that adds nothing moves nothing.
        assert import_lines(db_url, tmp_path / "again.nt", [f"<{entity(0)}> <{relation(3)}> <{chosen}> .\n"]) == 2
        time.sleep(2 * REFRESH)
        assert client.predict_tails([(entity(0), relation(3))], 1).store_revision == 2


def refusing_reencoder(
    served: ServedModel, vocabulary: Vocabulary, message: torch.Tensor, touched: torch.Tensor
) -> torch.Tensor:
    """What a plugin that cannot embed unseen entities answers: a typed refusal."""
    raise ExplanationUnavailable(f"{served.plugin} cannot embed entities it was not trained on")


@pytest.mark.parametrize("reencode", [None, refusing_reencoder], ids=["no-reencoder", "refusing"])
def test_without_an_encoder_for_unseen_entities_they_are_not_found_not_guessed(
    db_url: str, stored_bundle: Path, tmp_path: Path, reencode: Reencoder | None
) -> None:
    with following_server(stored_bundle, db_url, reencode) as server, KGClient(server.address) as client:
        import_lines(db_url, tmp_path / "more.nt", [
            f"<{entity(0)}> <{relation(3)}> <{NEW}> .\n",
            f"<{entity(0)}> <{relation(3)}> <{entity(5)}> .\n",
        ])
        wait_for_revision(client, 2)
        answers = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True).results[0]
        assert entity(5) not in {r.entity for r in answers}
        assert NEW not in {r.entity for r in answers} and not any(r.new_entity for r in answers)
        with pytest.raises(RequestFailed) as caught:
            client.embeddings([NEW])
        assert caught.value.code == grpc.StatusCode.NOT_FOUND and "retrain" in str(caught.value)


def test_a_server_without_a_store_reports_revision_zero(stored_bundle: Path) -> None:
    with following_server(stored_bundle, None) as server, KGClient(server.address) as client:
        answer = client.predict_tails([(entity(0), relation(3))], 5, filter_known=True)
        assert answer.store_revision == 0
        assert all(r.label == "" and not r.new_entity for r in answer.results[0])
        assert client.score([(entity(0), relation(3), entity(1))]).store_revision == 0


@pytest.mark.serial
def test_a_refresh_without_change_is_cheap(db_url: str, stored_bundle: Path) -> None:
    def build(ref: str, version: str) -> ServedModel:
        return served_model(ref, load_bundle(stored_bundle, version=version), db_url)

    server = KGServer(ServeConfig(models=["toy@champion"], port=0), lambda ref: "toy/1", build)
    server.holder.load()
    watcher = StoreWatcher(server.holder, db_url, 0, None)
    try:
        watcher.check_once()  # warm the connection pool
        started = time.thread_time()
        for _ in range(50):
            assert watcher.check_once() == []
        cpu_ms = (time.thread_time() - started) / 50 * 1000
        assert cpu_ms < 10, f"a refresh without change took {cpu_ms:.2f} ms of CPU"
    finally:
        watcher.stop()
        server.stop(grace=0)


def test_sixteen_clients_during_imports_see_whole_revisions_in_order(
    db_url: str, stored_bundle: Path, tmp_path: Path
) -> None:
    added = {2: entity(7), 3: entity(8), 4: entity(9)}  # revision -> tail added to (0, relation 3)
    failures: list[str] = []
    seen: dict[int, list[tuple[int, set[str]]]] = {}
    stop = threading.Event()
    with following_server(stored_bundle, db_url, neighbour_mean) as server:

        def client_loop(number: int) -> None:
            log = seen.setdefault(number, [])
            with KGClient(server.address) as client:
                while not stop.is_set():
                    try:
                        answer = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True)
                    except Exception as error:  # every failure is a test failure
                        failures.append(f"client {number}: {error}")
                        return
                    log.append((answer.store_revision, {r.entity for r in answer.results[0]}))

        threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        try:
            for revision, tail in added.items():
                line = f"<{entity(0)}> <{relation(3)}> <{tail}> .\n<{NEW}{revision}> <{relation(0)}> <{tail}> .\n"
                assert import_lines(db_url, tmp_path / f"r{revision}.nt", [line]) == revision
                time.sleep(3 * REFRESH)
            deadline = time.monotonic() + 10 * REFRESH + 5  # the last swap warms up first: allow a loaded machine
            while not any(log and log[-1][0] == 4 for log in seen.values()) and time.monotonic() < deadline:
                time.sleep(REFRESH / 4)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert failures == []
    for number, log in seen.items():
        revisions = [revision for revision, _ in log]
        assert revisions == sorted(revisions), f"client {number} saw revisions go back"
        for revision, answers in log:
            # Filtered answers at revision r exclude every tail added up to r: one whole state.
            assert not {tail for r, tail in added.items() if r <= revision} & answers
    assert max(revision for log in seen.values() for revision, _ in log) == 4


def test_cli_expands_recorded_and_given_prefixes_and_prints_labels_from_the_response(
    db_url: str, stored_bundle: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    import kgserver.cli  # noqa: F401  # registers every command
    from kgserver.cli.app import app
    from kgserver.errors import ConfigurationError

    turtle = tmp_path / "prefixed.ttl"
    turtle.write_text(
        "@prefix ent: <http://example.org/entity/> .\n@prefix rel: <http://example.org/relation/> .\n"
        "ent:0 rel:3 ent:11 .\n",
        encoding="utf-8",
    )
    with open_store(db_url) as store:
        import_files(store, [turtle], "toy")
    runner = CliRunner()
    with following_server(stored_bundle, db_url, None) as server:
        common = ["--server", server.address, "--db", db_url, "--json"]
        recorded = runner.invoke(app, ["query", "tails", "--head", "ent:0", "-r", "rel:3", "-k", "3", *common])
        assert recorded.exit_code == 0, recorded.output
        payload = json.loads(recorded.output)
        assert payload["query"] == {"entity": entity(0), "relation": relation(3)}
        assert payload["store_revision"] == 2
        assert all(row["label"].startswith("Entity ") for row in payload["results"])
        german = runner.invoke(
            app,
            [
                "query", "tails", "--head", "e:0", "-r", "rel:3", "-k", "1",
                "--prefix", "e=http://example.org/entity/", "--language", "de", *common,
            ],
        )
        assert german.exit_code == 0, german.output
        assert json.loads(german.output)["results"][0]["label"].startswith("Ding ")
        scored = runner.invoke(app, ["query", "score", "ent:0", "rel:3", "ent:11", *common])
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.output)["triples"][0]["head"] == entity(0)
        bad = runner.invoke(app, ["query", "embed", "ent:1", "--prefix", "nonsense", *common])
        assert isinstance(bad.exception, ConfigurationError)
        assert "--prefix 'nonsense' is not PREFIX=NAMESPACE" in str(bad.exception)


def test_kgserver_serve_follows_the_store(db_url: str, stored_bundle: Path, tmp_path: Path) -> None:
    """The real CLI: --db with --refresh-seconds starts the watcher, --language picks labels."""
    from .helpers import ServerProcess

    process = ServerProcess(
        ["--model", str(stored_bundle), "--db", db_url, "--refresh-seconds", "0.3", "--language", "de",
         "--poll-seconds", "0"],
        tmp_path / "server.log",
        env={"KGSERVER_HOME": str(tmp_path)},
    )
    try:
        with KGClient(process.address) as client:
            first = client.predict_tails([(entity(0), relation(3))], 1, filter_known=True)
            assert first.store_revision == 1 and first.results[0][0].label.startswith("Ding ")
            chosen = first.results[0][0].entity
            import_lines(db_url, tmp_path / "more.nt", [f"<{entity(0)}> <{relation(3)}> <{chosen}> .\n"])
            wait_for_revision(client, 2)
            after = client.predict_tails([(entity(0), relation(3))], 60, filter_known=True)
            assert chosen not in {r.entity for r in after.results[0]}
    finally:
        assert process.stop() == 0, process.log()
    assert "now at store revision 2" in process.log()
