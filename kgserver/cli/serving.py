"""kgserver CLI commands (serving): ``serve`` and ``query tails|heads|score|embed|explain``.

Heavy imports (torch, grpc, mlflow) happen inside the commands so ``kgserver --help``
stays fast.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from kgserver.cli.app import DbOption, JsonOption, app, echo_json, query_app

if TYPE_CHECKING:
    from collections.abc import Callable

    from kgserver.client import KGClient
    from kgserver.serving.server import ServeConfig
    from kgserver.serving.workers import WorkerPeers

SERVE_EPILOG = (
    "Health: grpc.health.v1.Health reports SERVING once every model is loaded and has answered a few "
    "warm-up queries (in every worker). "
    "SIGTERM/SIGINT: stop accepting calls, finish in-flight ones within --grace-seconds, exit 0."
)


@app.command(epilog=SERVE_EPILOG)
def serve(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="NAME@ALIAS, NAME/VERSION, runs:/RUN_ID/model or a bundle directory; repeat to serve "
        "several (the first answers requests that name no model).",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
    port: int = typer.Option(50051, "--port", min=0, max=65535, help="TCP port (0 picks a free one and logs it)."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="PEM certificate chain; enables TLS."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="PEM private key of --tls-cert."),
    auth_token_file: Path | None = typer.Option(
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
    tracking_uri: str | None = typer.Option(
        None,
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else the embedded store).",
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        envvar="KGSERVER_DATABASE_URL",
        show_envvar=True,
        help="Store whose triples of each model's graph filter_known also removes, read once per "
        "loaded version (default: no store; only the model's training triples are known).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Server processes sharing the port (SO_REUSEPORT); each loads every model and follows the "
        "registry itself, and the embeddings they compute alike are held once (files on /dev/shm). "
        "Health says SERVING once all are ready; SIGTERM drains all; if one exits, all stop.",
    ),
    threads: int = typer.Option(
        128, "--threads", help="gRPC threads per worker process (concurrent calls in progress)."
    ),
    batch_wait_ms: float = typer.Option(
        5.0,
        "--batch-wait-ms",
        help="Longest a batch waits for more requests, and only while recent batches show "
        "concurrent clients (a lone client never waits). 0: batch only what is already queued.",
    ),
    grace_seconds: float = typer.Option(20.0, "--grace-seconds", help="Drain time for in-flight calls on shutdown."),
    response_memory_mb: int = typer.Option(
        128,
        "--response-memory-mb",
        min=1,
        help="Most MiB of answers built at once, counted by each request's worst-case answer size; "
        "a request that does not fit waits (until just before its deadline; 30 s without one), "
        "then gets RESOURCE_EXHAUSTED. "
        "A request whose answer could exceed this or the 64 MiB message limit gets INVALID_ARGUMENT.",
    ),
    torch_threads: int = typer.Option(
        0,
        "--torch-threads",
        help="Tensor-math threads per worker process (0: with one worker, one per CPU core but one, which "
        "request handling needs; with several, one each).",
    ),
    refresh_seconds: float = typer.Option(
        2.0,
        "--refresh-seconds",
        min=0.0,
        help="With --db: how often to check each model's graph for new triples (one cheap query); "
        "new triples, entities and labels are then served without a restart. 0: read the store only at load.",
    ),
    language: str = typer.Option(
        "en",
        "--language",
        help="Language (BCP 47) of the labels in answers when a request names none; an untagged label is the fallback.",
    ),
) -> None:
    """Serve link prediction and embeddings over gRPC, following registry aliases.

    Each model's encoder runs once at load; concurrent requests are batched into one scoring call.

    The registry is polled: when an alias moves, the new version loads in the background and is swapped in atomically.

    filter_known removes the model's training triples, and with --db every stored triple of its graph.
    """
    import logging

    from kgserver.serving.server import ServeConfig
    from kgserver.serving.workers import supervise

    process = " [%(process)d]" if workers > 1 else ""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s{process} %(name)s: %(message)s")
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
        threads=threads,
        batch_wait_ms=batch_wait_ms,
        grace_seconds=grace_seconds,
        response_memory_mb=response_memory_mb,
    )
    serve_one = _worker(tracking_uri, db, torch_threads, workers, language, refresh_seconds)
    if workers == 1:
        serve_one(config, None)
    else:
        supervise(config, workers, serve_one)


def _worker(
    tracking_uri: str | None,
    db: str | None,
    torch_threads: int,
    workers: int,
    language: str,
    refresh_seconds: float,
) -> Callable[[ServeConfig, WorkerPeers | None], None]:
    """One server process's life, run in the ``serve`` process itself or in each forked worker.

    Everything with threads or connections (torch's thread pool, the registry
    client, the store watcher, the gRPC server) is made here, after any fork: each
    worker follows the aliases and the store itself.
    """

    def serve_one(config: ServeConfig, peers: WorkerPeers | None) -> None:
        import os

        import torch

        from kgserver.serving.live import Reencoder, reencode
        from kgserver.serving.server import KGServer, run
        from kgserver.serving.shared import SharedEmbeddings
        from kgserver.serving.source import registry_source
        from kgserver.serving.watcher import StoreWatcher

        default_threads = max(1, (os.cpu_count() or 1) - 1) if workers == 1 else 1
        torch.set_num_threads(torch_threads or default_threads)
        resolve, build = registry_source(tracking_uri, db, language)
        reencoder: Reencoder = reencode
        if peers is not None:  # one of a set: the embeddings all workers compute alike are held once
            shared = SharedEmbeddings(peers.directory)
            build, reencoder = shared.builder(build), shared.reencoder(reencode)
        server = KGServer(config, resolve, build)
        watcher = None
        if db is not None and refresh_seconds > 0:
            watcher = StoreWatcher(server.holder, db, refresh_seconds, reencoder)
            watcher.start()  # follows each model from the moment it is loaded
        try:
            run(server, peers)
        finally:
            if watcher is not None:
                watcher.stop()

    return serve_one


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
PrefixOption = typer.Option(
    None,
    "--prefix",
    metavar="PREFIX=NAMESPACE",
    help="Accept PREFIX:name for NAMESPACE + name in the IRIs given (repeatable). The @prefix "
    "declarations recorded when the model's graph was imported from Turtle/TriG apply too (read from --db).",
)
LanguageOption = typer.Option(
    "", "--language", help="Language (BCP 47) of the labels the server sends (default: the server's setting)."
)
RelationOption = typer.Option(..., "--relation", "-r", help="IRI of the relation.")
AnswersOption = typer.Option(10, "-k", "--k", help="How many answers.")


def _client(server: str, tls: bool, tls_ca: Path | None, token_file: Path | None, timeout: float) -> KGClient:
    from kgserver.client import KGClient
    from kgserver.serving.auth import read_token

    token = read_token(token_file) if token_file is not None else None
    return KGClient(server, tls=tls, root_certificates=tls_ca, token=token, timeout=timeout)


def _labels(client: KGClient, version: str, iris: list[str], db: str | None) -> dict[str, str]:
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


_PREFIXED = re.compile(r"([A-Za-z][\w.-]*)?:(?!//)(\S*)")
"""``prefix:local`` (``wd:Q42``, ``:x``); ``http://...`` is not one (its local part starts with ``//``)."""


def _expanded(client: KGClient, model: str, names: list[str], given: list[str] | None, db: str | None) -> list[str]:
    """``names`` with every ``prefix:local`` whose prefix is known replaced by the full IRI.

    Prefixes come from ``--prefix`` and, for prefixes not given there, from the
    declarations recorded when the answering model's graph was imported (the store at
    ``db``). A name with an unknown prefix is sent as written (it may be an IRI such as ``urn:x``).
    """
    from kgserver.errors import ConfigurationError, GraphNotFound, KGServerError
    from kgserver.store import open_store

    prefixes: dict[str, str] = {}
    for option in given or []:
        prefix, equals, namespace = option.partition("=")
        if not equals or not namespace or ":" in prefix:
            raise ConfigurationError(
                f"--prefix {option!r} is not PREFIX=NAMESPACE (e.g. wd=http://www.wikidata.org/entity/)"
            )
        prefixes[prefix] = namespace
    wanted = {match.group(1) or "" for name in names if (match := _PREFIXED.fullmatch(name))}
    if wanted - prefixes.keys():
        served = client.list_models().models
        graph = next(
            (m.graph for m in served if ((m.name == model or m.version == model) if model else m.is_default)),
            "",
        )
        if graph:
            try:
                with open_store(db) as store:
                    prefixes = {**store.prefixes(graph), **prefixes}
            except GraphNotFound:
                pass
            except KGServerError as error:
                Console(stderr=True).print(f"[yellow]no stored prefixes:[/] {error}", highlight=False)

    def expand(name: str) -> str:
        match = _PREFIXED.fullmatch(name)
        if match is None or (match.group(1) or "") not in prefixes:
            return name
        return prefixes[match.group(1) or ""] + match.group(2)

    return [expand(name) for name in names]


def _print_predictions(
    client: KGClient, answer: Any, known: str, relation: str, db: str | None, labels: bool, as_json: bool
) -> None:
    rows = answer.results[0]
    names = {r.entity: r.label for r in rows if r.label} if labels else {}  # the server's labels
    if labels and not names:  # a server without a store sends none: look them up here
        names = _labels(client, answer.model_version, [r.entity for r in rows], db)
    if as_json:
        payload = {
            "model_version": answer.model_version,
            "store_revision": answer.store_revision,
            "query": {"entity": known, "relation": relation},
            "results": [
                {
                    "rank": rank,
                    "entity": r.entity,
                    "score": r.score,
                    "new_entity": r.new_entity,
                    **({"label": names[r.entity]} if r.entity in names else {}),
                }
                for rank, r in enumerate(rows, 1)
            ],
        }
        echo_json(payload)
        return
    revision = f", store revision {answer.store_revision}" if answer.store_revision else ""
    table = Table(title=f"{known}  {relation}  (model {answer.model_version}{revision})")
    table.add_column("#", justify="right")
    table.add_column("entity", overflow="fold")
    if names:
        table.add_column("label", overflow="fold")
    new = any(r.new_entity for r in rows)  # entities added to the store after training
    if new:
        table.add_column("new")
    table.add_column("score", justify="right")
    for rank, r in enumerate(rows, 1):
        label = [names.get(r.entity, "")] if names else []
        marked = ["yes" if r.new_entity else ""] if new else []
        table.add_row(str(rank), r.entity, *label, *marked, f"{r.score:.4f}")
    Console().print(table)


@query_app.command("tails")
def query_tails(
    head: str = typer.Option(..., "--head", help="IRI of the known head."),
    relation: str = RelationOption,
    k: int = AnswersOption,
    filter_known: bool = typer.Option(False, "--filter-known", help="Leave out tails of known triples."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    timeout: float = TimeoutOption,
    labels: bool = LabelsOption,
    db: str | None = DbOption,
    as_json: bool = JsonOption,
    language: str = LanguageOption,
    prefix: list[str] | None = PrefixOption,
) -> None:
    """Top-k tails completing (HEAD, RELATION, ?), best first."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        head, relation = _expanded(client, model, [head, relation], prefix, db)
        answer = client.predict_tails([(head, relation)], k, filter_known=filter_known, model=model, language=language)
        _print_predictions(client, answer, head, relation, db, labels, as_json)


@query_app.command("heads")
def query_heads(
    tail: str = typer.Option(..., "--tail", help="IRI of the known tail."),
    relation: str = RelationOption,
    k: int = AnswersOption,
    filter_known: bool = typer.Option(False, "--filter-known", help="Leave out heads of known triples."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    timeout: float = TimeoutOption,
    labels: bool = LabelsOption,
    db: str | None = DbOption,
    as_json: bool = JsonOption,
    language: str = LanguageOption,
    prefix: list[str] | None = PrefixOption,
) -> None:
    """Top-k heads completing (?, RELATION, TAIL), best first."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        tail, relation = _expanded(client, model, [tail, relation], prefix, db)
        answer = client.predict_heads([(tail, relation)], k, filter_known=filter_known, model=model, language=language)
        _print_predictions(client, answer, tail, relation, db, labels, as_json)


@query_app.command("score")
def query_score(
    iris: list[str] = typer.Argument(
        ..., metavar="HEAD RELATION TAIL [HEAD RELATION TAIL ...]", help="Triples as IRIs, three per triple."
    ),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
    prefix: list[str] | None = PrefixOption,
    db: str | None = DbOption,
) -> None:
    """The model's plausibility score of each triple (higher is more plausible)."""
    from kgserver.errors import ConfigurationError

    if len(iris) % 3:
        raise ConfigurationError(f"score takes triples: a multiple of 3 IRIs, got {len(iris)}")
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        iris = _expanded(client, model, list(iris), prefix, db)
        triples = [tuple(iris[i : i + 3]) for i in range(0, len(iris), 3)]
        answer = client.score(triples, model=model)  # type: ignore[arg-type]
    if as_json:
        rows = [{"head": h, "relation": r, "tail": t, "score": s} for (h, r, t), s in zip(triples, answer.scores)]
        echo_json({"model_version": answer.model_version, "triples": rows})
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
    entities: list[str] = typer.Argument(..., metavar="ENTITY...", help="Entity IRIs."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    timeout: float = TimeoutOption,
    as_json: bool = JsonOption,
    prefix: list[str] | None = PrefixOption,
    db: str | None = DbOption,
) -> None:
    """Entity embeddings from the model's encoder (--json prints the full vectors)."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        entities = _expanded(client, model, list(entities), prefix, db)
        answer = client.embeddings(entities, model=model)
    if as_json:
        vectors = dict(zip(answer.entities, answer.vectors))
        echo_json({"model_version": answer.model_version, "embeddings": vectors})
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
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    as_json: bool = JsonOption,
) -> None:
    """The server's grpc.health.v1 status; exits 0 only when it is SERVING (scripts: --wait 300)."""
    with _client(server, tls, tls_ca, auth_token_file, timeout=5.0) as client:
        status = client.health(wait=wait)
    if as_json:
        echo_json({"server": server, "status": status})
    else:
        print(f"{server}: {status}")
    if status != "SERVING":
        raise typer.Exit(1)


@query_app.command("explain")
def query_explain(
    head: str = typer.Argument(..., metavar="HEAD", help="IRI of the head."),
    relation: str = typer.Argument(..., metavar="RELATION", help="IRI of the relation."),
    tail: str = typer.Argument(..., metavar="TAIL", help="IRI of the tail whose prediction is explained."),
    k: int = typer.Option(10, "-k", "--k", help="How many evidence triples (and at most as many paths)."),
    model: str = ModelOption,
    server: str = ServerOption,
    tls: bool = TlsOption,
    tls_ca: Path | None = TlsCaOption,
    auth_token_file: Path | None = TokenFileOption,
    timeout: float = TimeoutOption,
    labels: bool = LabelsOption,
    db: str | None = DbOption,
    as_json: bool = JsonOption,
    prefix: list[str] | None = PrefixOption,
) -> None:
    """Why TAIL answers (HEAD, RELATION, ?): score, filtered rank, the training triples the
    prediction depends on most, and the paths they form from HEAD to TAIL."""
    with _client(server, tls, tls_ca, auth_token_file, timeout) as client:
        head, relation, tail = _expanded(client, model, [head, relation, tail], prefix, db)
        answer = client.explain(head, relation, tail, k, model=model)
        iris = sorted({iri for item in answer.evidence for iri in item.triple} | {head, relation, tail})
        names = _labels(client, answer.model_version, iris, db) if labels else {}
    for item in answer.evidence:  # labels the server sent win over the store's
        names.update({iri: label for iri, label in zip(item.triple, item.labels) if label})
    if as_json:
        echo_json(_explanation_payload(answer, (head, relation, tail), names))
        return
    console = Console()
    console.print(
        f"{_named(head, names)}  {_named(relation, names)}  {_named(tail, names)}\n"
        f"score {answer.score:.4f}   filtered rank {answer.rank}   "
        f"(model {answer.model_version}, {answer.method} attribution)",
        highlight=False,
    )
    table = Table(title="evidence: the training triples the prediction depends on most")
    table.add_column("#", justify="right")
    for column in ("head", "relation", "tail"):
        table.add_column(column, overflow="fold")
    table.add_column("weight", justify="right")
    with_attention = any(item.attention for item in answer.evidence)
    if with_attention:
        table.add_column("attention per layer", justify="right")
    for rank, item in enumerate(answer.evidence, 1):
        attention = [", ".join(f"{a:.3f}" for a in item.attention)] if with_attention else []
        table.add_row(str(rank), *(_named(iri, names) for iri in item.triple), f"{item.weight:.4f}", *attention)
    console.print(table)
    if not answer.paths:
        console.print("no path of up to 3 supporting triples joins the head to the tail")
    for rank, path in enumerate(answer.paths, 1):
        chain = _chain(head, path.hops, names)
        console.print(f"path {rank} (weight {path.weight:.4f}): {chain}", highlight=False)


def _named(iri: str, names: dict[str, str]) -> str:
    return f"{names[iri]} <{iri}>" if iri in names else iri


def _chain(start: str, hops: list[tuple[str, str, str]], names: dict[str, str]) -> str:
    """``a -r-> b <-s- c``: each hop from the entity reached so far, walked with or against its direction."""
    parts, at = [_named(start, names)], start
    for h, r, t in hops:
        forward = h == at
        at = t if forward else h
        relation = _named(r, names)
        parts.append(f"-[{relation}]->" if forward else f"<-[{relation}]-")
        parts.append(_named(at, names))
    return " ".join(parts)


def _explanation_payload(answer: Any, triple: tuple[str, str, str], names: dict[str, str]) -> dict[str, Any]:
    def labelled(h: str, r: str, t: str) -> dict[str, str]:
        row = {"head": h, "relation": r, "tail": t}
        row.update({f"{key}_label": names[iri] for key, iri in row.copy().items() if iri in names})
        return row

    return {
        "model_version": answer.model_version,
        "store_revision": answer.store_revision,
        "method": answer.method,
        "triple": labelled(*triple),
        "score": answer.score,
        "rank": answer.rank,
        "evidence": [
            {
                **labelled(*item.triple),
                "weight": item.weight,
                **({"attention": item.attention} if item.attention else {}),
            }
            for item in answer.evidence
        ],
        "paths": [{"weight": path.weight, "hops": [labelled(*hop) for hop in path.hops]} for path in answer.paths],
    }
