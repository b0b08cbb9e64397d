"""kgserver CLI commands (serving): ``serve`` and ``query tails|heads|score|embed``.

Heavy imports (torch, grpc, mlflow) happen inside the commands so ``kgserver --help``
stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from kgserver.cli.app import DbOption, JsonOption, app, query_app

if TYPE_CHECKING:
    from kgserver.client import KGClient

SERVE_EPILOG = (
    "Health: grpc.health.v1.Health reports SERVING once every model is loaded. "
    "SIGTERM/SIGINT: stop accepting calls, finish in-flight ones within --grace-seconds, exit 0."
)


@app.command(epilog=SERVE_EPILOG)
def serve(
    model: List[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="NAME@ALIAS, NAME/VERSION, runs:/RUN_ID/model or a bundle directory; repeat to serve "
        "several (the first answers requests that name no model).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(50051, "--port", help="TCP port (0 picks a free one and logs it)."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="PEM certificate chain; enables TLS."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    auth_token_file: Optional[Path] = typer.Option(
        None,
        "--auth-token-file",
        envvar="KGSERVER_AUTH_TOKEN_FILE",
        help="File holding a token; calls must then send 'authorization: Bearer <token>' "
        "(the health service stays open for probes).",
    ),
    max_k: int = typer.Option(1000, "--max-k", help="Largest k a prediction request may ask for."),
    max_batch: int = typer.Option(
        1024, "--max-batch", help="Most queries/triples/entities per request, and per scoring batch."
    ),
    poll_seconds: float = typer.Option(
        10.0, "--poll-seconds", help="How often to check whether an alias moved (0: never)."
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else the embedded store)."
    ),
    db: Optional[str] = typer.Option(
        None,
        "--db",
        envvar="KGSERVER_DATABASE_URL",
        show_envvar=True,
        help="Store whose triples of each model's graph filter_known also removes, read once per "
        "loaded version (default: no store; only the model's training triples are known).",
    ),
    workers: int = typer.Option(128, "--workers", help="gRPC worker threads (concurrent calls in progress)."),
    batch_wait_ms: float = typer.Option(
        2.0,
        "--batch-wait-ms",
        help="Longest a batch waits for more requests, and only while recent batches show "
        "concurrent clients (a lone client never waits). 0: batch only what is already queued.",
    ),
    grace_seconds: float = typer.Option(20.0, "--grace-seconds", help="Drain time for in-flight calls on shutdown."),
    torch_threads: int = typer.Option(
        0,
        "--torch-threads",
        help="Threads for tensor math (0: one per CPU core but one, which request handling needs).",
    ),
) -> None:
    """Serve link prediction and embeddings over gRPC, following registry aliases.

    Each model's encoder runs once at load; concurrent requests are batched into one scoring call.

    The registry is polled: when an alias moves, the new version loads in the background and is swapped in atomically.

    filter_known removes the model's training triples, and with --db every stored triple of its graph.
    """
    import logging
    import os

    import torch

    from kgserver.serving.server import KGServer, ServeConfig, run
    from kgserver.serving.source import registry_source

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(torch_threads or max(1, (os.cpu_count() or 1) - 1))
    config = ServeConfig(
        models=model,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        auth_token_file=auth_token_file,
        max_k=max_k,
        max_batch=max_batch,
        poll_seconds=poll_seconds,
        workers=workers,
        batch_wait_ms=batch_wait_ms,
        grace_seconds=grace_seconds,
    )
    resolve, build = registry_source(tracking_uri, db)
    run(KGServer(config, resolve, build))


# --- query -------------------------------------------------------------------------

ServerOption = typer.Option(
    "127.0.0.1:50051", "--server", "-s", envvar="KGSERVER_ADDRESS", show_envvar=True, help="host:port of the server."
)
ModelOption = typer.Option("", "--model", "-m", help="NAME@ALIAS or NAME/VERSION (default: the server's default).")
TlsOption = typer.Option(False, "--tls", help="Use TLS, trusting the system's root certificates.")
TlsCaOption = typer.Option(None, "--tls-ca", help="PEM root certificate(s) to trust; implies --tls.")
TokenFileOption = typer.Option(
    None, "--auth-token-file", envvar="KGSERVER_AUTH_TOKEN_FILE", help="File holding the bearer token."
)
LabelsOption = typer.Option(True, "--labels/--no-labels", help="Look up rdfs:label of the answers in the store.")
TimeoutOption = typer.Option(30.0, "--timeout", help="Seconds to wait for the answer.")


def _client(server: str, tls: bool, tls_ca: Optional[Path], token_file: Optional[Path], timeout: float) -> "KGClient":
    from kgserver.client import KGClient
    from kgserver.serving.auth import read_token

    token = read_token(token_file) if token_file is not None else None
    return KGClient(server, tls=tls, root_certificates=tls_ca, token=token, timeout=timeout)


def _labels(client: "KGClient", version: str, iris: list[str], db: Optional[str]) -> dict[str, str]:
    """rdfs:label of ``iris`` from the graph the answering model was trained on, if stored.

    A store without that graph or without labels just yields none; a store that cannot
    be opened is reported on stderr (the answers are still printed).
    """
    from kgserver.errors import GraphNotFound, KGServerError
    from kgserver.store import open_store

    graph = next((m.graph for m in client.list_models().models if m.version == version), "")
    if not graph:
        return {}
    try:
        store = open_store(db)
    except KGServerError as error:
        Console(stderr=True).print(f"[yellow]no labels:[/] {error}", highlight=False)
        return {}
    try:
        return store.labels(graph, iris)
    except GraphNotFound:
        return {}
    finally:
        store.close()


def _print_predictions(
    client: "KGClient", answer: Any, known: str, relation: str, db: Optional[str], labels: bool, as_json: bool
) -> None:
    rows = answer.results[0]
    names = _labels(client, answer.model_version, [r.entity for r in rows], db) if labels else {}
    if as_json:
        payload = {
            "model_version": answer.model_version,
            "query": {"entity": known, "relation": relation},
            "results": [
                {"rank": rank, "entity": r.entity, "score": r.score, **({"label": names[r.entity]} if r.entity in names else {})}
                for rank, r in enumerate(rows, 1)
            ],
        }
        print(json.dumps(payload))
        return
    table = Table(title=f"{known}  {relation}  (model {answer.model_version})")
    table.add_column("#", justify="right")
    table.add_column("entity", overflow="fold")
    if names:
        table.add_column("label", overflow="fold")
    table.add_column("score", justify="right")
    for rank, r in enumerate(rows, 1):
        table.add_row(str(rank), r.entity, *([names.get(r.entity, "")] if names else []), f"{r.score:.4f}")
    Console().print(table)


@query_app.command("tails")
def query_tails(
    head: str = typer.Option(..., "--head", help="IRI of the known head."),
    relation: str = typer.Option(..., "--relation", "-r", help="IRI of the relation."),
    k: int = typer.Option(10, "-k", "--k", help="How many answers."),
    filter_known: bool = typer.Option(False, "--filter-known", help="Leave out tails of known triples."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Optional[Path] = TlsCaOption,
    auth_token_file: Optional[Path] = TokenFileOption,
    timeout: float = TimeoutOption,
    labels: bool = LabelsOption,
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Top-k tails completing (HEAD, RELATION, ?), best first."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        answer = client.predict_tails([(head, relation)], k, filter_known=filter_known, model=model)
        _print_predictions(client, answer, head, relation, db, labels, as_json)


@query_app.command("heads")
def query_heads(
    tail: str = typer.Option(..., "--tail", help="IRI of the known tail."),
    relation: str = typer.Option(..., "--relation", "-r", help="IRI of the relation."),
    k: int = typer.Option(10, "-k", "--k", help="How many answers."),
    filter_known: bool = typer.Option(False, "--filter-known", help="Leave out heads of known triples."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Optional[Path] = TlsCaOption,
    auth_token_file: Optional[Path] = TokenFileOption,
    timeout: float = TimeoutOption,
    labels: bool = LabelsOption,
    db: Optional[str] = DbOption,
    as_json: bool = JsonOption,
) -> None:
    """Top-k heads completing (?, RELATION, TAIL), best first."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        answer = client.predict_heads([(tail, relation)], k, filter_known=filter_known, model=model)
        _print_predictions(client, answer, tail, relation, db, labels, as_json)


@query_app.command("score")
def query_score(
    iris: List[str] = typer.Argument(..., metavar="HEAD RELATION TAIL [HEAD RELATION TAIL ...]", help="Triples as IRIs, three per triple."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Optional[Path] = TlsCaOption,
    auth_token_file: Optional[Path] = TokenFileOption,
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """The model's plausibility score of each triple (higher is more plausible)."""
    from kgserver.errors import ConfigurationError

    if len(iris) % 3:
        raise ConfigurationError(f"score takes triples: a multiple of 3 IRIs, got {len(iris)}")
    triples = [tuple(iris[i : i + 3]) for i in range(0, len(iris), 3)]
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        answer = client.score(triples, model=model)  # type: ignore[arg-type]
    if as_json:
        rows = [{"head": h, "relation": r, "tail": t, "score": s} for (h, r, t), s in zip(triples, answer.scores)]
        print(json.dumps({"model_version": answer.model_version, "triples": rows}))
        return
    table = Table(title=f"triple scores (model {answer.model_version})")
    for column in ("head", "relation", "tail"):
        table.add_column(column, overflow="fold")
    table.add_column("score", justify="right")
    for (h, r, t), s in zip(triples, answer.scores):
        table.add_row(h, r, t, f"{s:.4f}")
    Console().print(table)


@query_app.command("embed")
def query_embed(
    entities: List[str] = typer.Argument(..., metavar="ENTITY...", help="Entity IRIs."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Optional[Path] = TlsCaOption,
    auth_token_file: Optional[Path] = TokenFileOption,
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
) -> None:
    """Entity embeddings from the model's encoder (--json prints the full vectors)."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        answer = client.embeddings(entities, model=model)
    if as_json:
        vectors = dict(zip(answer.entities, answer.vectors))
        print(json.dumps({"model_version": answer.model_version, "embeddings": vectors}))
        return
    table = Table(title=f"entity embeddings (model {answer.model_version})")
    table.add_column("entity", overflow="fold")
    table.add_column("dim", justify="right")
    table.add_column("L2 norm", justify="right")
    table.add_column("first values")
    for entity, vector in zip(answer.entities, answer.vectors):
        norm = sum(v * v for v in vector) ** 0.5
        head = ", ".join(f"{v:.3f}" for v in vector[:4]) + (", ..." if len(vector) > 4 else "")
        table.add_row(entity, str(len(vector)), f"{norm:.4f}", head)
    Console().print(table)


@query_app.command("health")
def query_health(
    wait: float = typer.Option(0.0, "--wait", help="Keep asking for up to this many seconds until SERVING."),
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Optional[Path] = TlsCaOption,
    auth_token_file: Optional[Path] = TokenFileOption,
    as_json: bool = JsonOption,
) -> None:
    """The server's grpc.health.v1 status; exits 0 only when it is SERVING (scripts: --wait 300)."""
    with _client(server, tls, tls_ca, auth_token_file, timeout=5.0) as client:
        status = client.health(wait=wait)
    print(json.dumps({"server": server, "status": status}) if as_json else f"{server}: {status}")
    if status != "SERVING":
        raise typer.Exit(1)
