"""Serving benchmark: tail prediction top-k over gRPC vs the same scoring in-process.

A model the size of FB15k-237 (its real vocabulary and training graph: 14,541
entities, 237 relations; dimension 200) is built through a real plugin with random
weights (latency does not depend on training), saved as a bundle and served by
the real ``kgserver serve`` process. Closed-loop clients (1, 16, 64 by default),
each with its own channel and one query per request, measure p50/p99 latency and
requests/s; the same run measures in-process ``score`` + ``topk`` throughput at
the same batch sizes (with the entity table in the served column-major layout and,
for comparison, row-major), which is the ceiling the server's batching aims at, and
the same load against a gRPC server that answers a canned top-10 with no model
at all, which is the ceiling of the framework and the load generator on this
machine (they share its CPUs with the server).

Every level is run for each ``--workers`` count (server processes sharing the
port; the canned server gets as many). Each client has its own connection
(``grpc.use_local_subchannel_pool``: channels of one process to one address
otherwise share one), so the kernel spreads clients over the workers. Server CPU
per request is the server processes' own user + system CPU time over a level
divided by the requests answered in it. Batched requests (``--batch-queries``
queries per request) are compared with the in-process rate at that batch size.
Cold start: the first ``--cold-requests`` requests after the server reports
ready, at ``--cold-clients`` callers, against the steady p99 at that
concurrency.

    .venv/bin/python bench/serve.py [--plugin compgcn] [--decoder complex] [--seconds 8] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import harness
import psutil
import torch
from harness import percentile

if TYPE_CHECKING:
    from kgserver.registry import KGModel

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / ".." / "shared" / "datasets" / "fb15k-237"


def fb15k237_snapshot():  # type: ignore[no-untyped-def]
    """FB15k-237's vocabulary (all splits) and training triples as a Snapshot."""
    from kgserver.graph import Snapshot

    rows = {}
    for split in ("train", "valid", "test"):
        with gzip.open(DATASET / f"{split}.tsv.gz", "rt", encoding="utf-8") as lines:
            rows[split] = [line.rstrip("\n").split("\t") for line in lines if line.strip()]
    entities = sorted({e for part in rows.values() for h, _, t in part for e in (h, t)})
    relations = sorted({r for part in rows.values() for _, r, _ in part})
    entity_id = {e: i for i, e in enumerate(entities)}
    relation_id = {r: i for i, r in enumerate(relations)}

    def tensor(part: list[list[str]]) -> torch.Tensor:
        return torch.tensor([[entity_id[h], relation_id[r], entity_id[t]] for h, r, t in part], dtype=torch.int64)

    return Snapshot(
        "fb15k-237", entities, relations, tensor(rows["train"]), tensor(rows["valid"]), tensor(rows["test"])
    )


def build_bundle(directory: Path, plugin: str, decoder: str, dim: int) -> tuple[Path, object]:
    from kgserver.registry import get_model
    from kgserver.tracking.bundle import save_bundle

    snapshot = fb15k237_snapshot()
    torch.manual_seed(0)
    model_class = get_model(plugin)
    hparams = model_class.hyperparameters.from_dict({"embedding_dim": dim, "decoder": decoder})
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams).eval()
    return save_bundle(directory / "bundle", model, snapshot), snapshot


def in_process_rate(
    model: KGModel, tables: tuple[torch.Tensor, torch.Tensor], batch: int, k: int, seconds: float
) -> float:
    """Queries/s of ``score`` against every entity + ``topk`` for batches of ``batch`` queries,
    with ``tables`` the ``(entity, relation)`` embeddings in the layout to measure."""
    entity_emb, relation_emb = tables
    n, r = entity_emb.shape[0], relation_emb.shape[0] // 2
    generator = torch.Generator().manual_seed(batch)
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            heads = torch.randint(0, n, (batch,), generator=generator)
            rels = torch.randint(0, r, (batch,), generator=generator)
            scores = model.score(entity_emb[heads], relation_emb[rels], entity_emb)
            torch.topk(scores, k, dim=1).indices.tolist()
            done += batch
    return done / (time.perf_counter() - started)


def start_server(bundle: Path, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen, str, list[str]]:
    """``kgserver serve`` on ``bundle`` with ``extra`` options, once SERVING: the process, its address, the command."""
    command = [
        str(Path(sys.executable).parent / "kgserver"),
        "serve",
        "--model",
        str(bundle),
        "--port",
        "0",
        "--poll-seconds",
        "0",
        *extra,
    ]
    process, address = harness.start_server(command, log_path)
    return process, address, command


OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
"""Channel option: one connection per client (else one process's channels to one address share one)."""


async def closed_loop(
    address: str,
    queries: list[tuple[str, str]],
    clients: int,
    k: int,
    seconds: float,
    per_request: int = 1,
    limit: int = 0,
) -> tuple[list[float], float]:
    """``clients`` concurrent callers, one connection each, ``per_request`` queries per call; latencies in seconds.

    Runs ``seconds``, or until ``limit`` calls are answered when ``limit`` is set.
    """
    import grpc

    from kgserver.proto.v1 import kgserver_pb2 as pb
    from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc

    requests = [
        pb.PredictRequest(queries=[pb.Query(entity=h, relation=r) for h, r in queries[i : i + per_request]], k=k)
        for i in range(0, len(queries) - per_request + 1, per_request)
    ]
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        async with grpc.aio.insecure_channel(address, OWN_CONNECTION) as channel:
            predict = pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails
            await channel.channel_ready()
            n = index
            while True:
                started = time.perf_counter()
                if (limit and len(latencies) >= limit) or (not limit and started >= stop_at):
                    return
                await predict(requests[n % len(requests)], timeout=30)
                latencies.append(time.perf_counter() - started)
                n += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, time.perf_counter() - started


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds the processes have used so far (their own, not their children's)."""
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


@dataclass
class Level:
    """One measured load level."""

    clients: int
    p50: float
    p99: float
    rate: float  # requests/s
    cpu_us: float  # server CPU microseconds per request


def measure(
    address: str,
    processes: list[psutil.Process],
    queries: list[tuple[str, str]],
    clients: int,
    k: int,
    seconds: float,
    per_request: int = 1,
) -> Level:
    asyncio.run(closed_loop(address, queries, clients, k, 1.0, per_request))  # warm-up
    before = cpu_seconds(processes)
    latencies, elapsed = asyncio.run(closed_loop(address, queries, clients, k, seconds, per_request))
    used = cpu_seconds(processes) - before
    return Level(
        clients,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        len(latencies) / elapsed,
        used / len(latencies) * 1e6,
    )


def server_processes(process: subprocess.Popen) -> list[psutil.Process]:
    """The ``serve`` process and its workers, if it forked any."""
    parent = psutil.Process(process.pid)
    return [parent, *parent.children()]


def canned_server(port_queue, port: int) -> None:  # type: ignore[no-untyped-def]
    """The framework's ceiling: the same gRPC server setup answering a canned top-10 without any work.

    Binds ``port`` with ``SO_REUSEPORT`` (0: a free one), so several can share it like serve's workers.
    """
    from concurrent import futures

    import grpc

    from kgserver.proto.v1 import kgserver_pb2 as pb

    answer = pb.PredictResponse(
        results=[pb.Predictions(entities=[pb.ScoredEntity(entity=f"/m/{i:07d}", score=1.0) for i in range(10)])],
        model_version="canned",
    )

    def predict(raw: bytes, context: object) -> object:
        pb.PredictRequest.FromString(raw)
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        predict, request_deserializer=None, response_serializer=pb.PredictResponse.SerializeToString
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128), options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("kgserver.v1.KnowledgeGraphCompletion", {"PredictTails": handler}),)
    )
    port_queue.put(server.add_insecure_port(f"127.0.0.1:{port}"))
    server.start()
    server.wait_for_termination()


def start_canned(workers: int) -> tuple[list, str]:  # type: ignore[type-arg]
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    processes = [context.Process(target=canned_server, args=(ports, 0), daemon=True)]
    processes[0].start()
    port = ports.get(timeout=60)
    for _ in range(workers - 1):
        processes.append(context.Process(target=canned_server, args=(ports, port), daemon=True))
        processes[-1].start()
        ports.get(timeout=60)
    return processes, f"127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="compgcn")
    parser.add_argument(
        "--decoder", default="complex", choices=["complex", "distmult", "conve"], help="the plugins' default is complex"
    )
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes (serve --workers)")
    parser.add_argument("--batch-queries", type=int, default=64, help="queries per request in the batched run")
    parser.add_argument("--batch-clients", type=int, default=4, help="callers in the batched run")
    parser.add_argument("--cold-requests", type=int, default=1600)
    parser.add_argument("--cold-clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="tensor threads per process, in-process and in each server worker alike",
    )
    parser.add_argument("--server-arg", action="append", default=[], help="extra `kgserver serve` option (repeatable)")
    options = parser.parse_args()
    torch.set_num_threads(options.torch_threads)

    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    with tempfile.TemporaryDirectory(prefix="kgserver-bench-") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        bundle, snapshot = build_bundle(work, options.plugin, options.decoder, options.dim)
        print(
            f"model: {options.plugin} + {options.decoder}, dim {options.dim}, {snapshot.num_entities} entities, "
            f"{snapshot.num_relations} relations, {len(snapshot.train)} training triples "
            f"(random weights; bundle built in {time.perf_counter() - started:.1f} s)"
        )

        from kgserver.serving.served import scoring_layout
        from kgserver.tracking.bundle import load_bundle

        loaded = load_bundle(bundle)
        with torch.inference_mode():
            entity_emb, relation_emb = loaded.encode()
        served_tables, row_major_tables = (scoring_layout(entity_emb), relation_emb), (entity_emb, relation_emb)
        batches = sorted({*options.clients, options.batch_queries})
        seconds = min(options.seconds, 4.0)
        inline = {b: in_process_rate(loaded.model, served_tables, b, options.k, seconds) for b in batches}
        row_major = {b: in_process_rate(loaded.model, row_major_tables, b, options.k, seconds) for b in batches}
        print(
            "in-process queries/s, served (column-major) table vs row-major: "
            + ", ".join(f"batch {b}: {inline[b]:.0f} vs {row_major[b]:.0f} ({inline[b] / row_major[b]:.2f}x)"
                        for b in batches)  # fmt: skip
        )
        generator = torch.Generator().manual_seed(1)
        heads = torch.randint(0, snapshot.num_entities, (4096,), generator=generator).tolist()
        rels = torch.randint(0, snapshot.num_relations, (4096,), generator=generator).tolist()
        queries = [(snapshot.entities[h], snapshot.relations[r]) for h, r in zip(heads, rels)]

        for workers in options.workers:
            server_args = [
                "--torch-threads",
                str(options.torch_threads),
                "--workers",
                str(workers),
                *options.server_arg,
            ]
            process, address, command = start_server(bundle, work / f"server-{workers}.log", server_args)
            processes = server_processes(process)
            try:
                cold, _ = asyncio.run(
                    closed_loop(address, queries, options.cold_clients, options.k, 0.0, limit=options.cold_requests)
                )
                rows = [measure(address, processes, queries, c, options.k, options.seconds) for c in options.clients]
                steady = measure(address, processes, queries, options.cold_clients, options.k, options.seconds)
                batched = measure(
                    address,
                    processes,
                    queries,
                    options.batch_clients,
                    options.k,
                    options.seconds,
                    options.batch_queries,
                )
            finally:
                process.terminate()
                code = process.wait(60)
            log = (work / f"server-{workers}.log").read_text(errors="replace")
            batching = re.findall(r"scorer: .*", log)

            canned_processes, canned_address = start_canned(workers)
            try:
                canned_ps = [psutil.Process(p.pid) for p in canned_processes]
                ceiling = {
                    c: measure(canned_address, canned_ps, queries, c, options.k, options.seconds)
                    for c in options.clients
                }
            finally:
                for canned in canned_processes:
                    canned.terminate()

            print(f"\nserver: {' '.join(command[1:])}")
            print(
                f"tail prediction top-{options.k}, one query per request, closed loop, "
                f"{options.seconds:.0f} s per level, {workers} worker process(es)"
            )
            print(
                "| clients | p50 ms | p99 ms | served req/s | server CPU us/req | in-process queries/s "
                "(batch = clients) | served / in-process | canned: req/s, p99 ms, CPU us/req | served / canned |"
            )
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for row in rows:
                top = ceiling[row.clients]
                print(
                    f"| {row.clients} | {row.p50 * 1e3:.2f} | {row.p99 * 1e3:.2f} | {row.rate:.0f} "
                    f"| {row.cpu_us:.0f} "
                    f"| {inline[row.clients]:.0f} | {row.rate / inline[row.clients]:.0%} "
                    f"| {top.rate:.0f}, {top.p99 * 1e3:.2f}, {top.cpu_us:.0f} | {row.rate / top.rate:.0%} |"
                )
            queries_rate = batched.rate * options.batch_queries
            print(
                f"batched: {options.batch_clients} clients x {options.batch_queries} queries per request: "
                f"{batched.rate:.0f} req/s = {queries_rate:.0f} queries/s, p99 {batched.p99 * 1e3:.2f} ms, "
                f"server CPU {batched.cpu_us:.0f} us/request; in-process at batch {options.batch_queries}: "
                f"{inline[options.batch_queries]:.0f} queries/s; served / in-process "
                f"{queries_rate / inline[options.batch_queries]:.0%}"
            )
            print(
                f"cold start: first {len(cold)} requests after ready at {options.cold_clients} clients: "
                f"p99 {percentile(cold, 0.99) * 1e3:.2f} ms (max {max(cold) * 1e3:.2f}); steady p99 at "
                f"{options.cold_clients} clients {steady.p99 * 1e3:.2f} ms; "
                f"ratio {percentile(cold, 0.99) / steady.p99:.2f}"
            )
            print(f"server exit code after SIGTERM: {code}; {'; '.join(batching)}")


if __name__ == "__main__":
    main()
