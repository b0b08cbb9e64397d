"""Serving benchmark: tail prediction top-k over gRPC vs the same scoring in-process.

A model the size of FB15k-237 (its real vocabulary and training graph: 14,541
entities, 237 relations; dimension 200) is built through a real plugin with random
weights (latency does not depend on training), saved as a bundle and served by
the real ``kgserver serve`` process. Closed-loop clients (1, 16, 64 by default),
each with its own channel and one query per request, measure p50/p99 latency and
requests/s; the same run measures in-process ``score`` + ``topk`` throughput at
the same batch sizes, which is the ceiling the server's batching aims at, and
the same load against a gRPC server that answers a canned top-10 with no model
at all, which is the ceiling of the framework and the load generator on this
machine (they share its CPUs with the server).

    .venv/bin/python bench/serve.py [--plugin compgcn] [--decoder complex] [--seconds 8]
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
from pathlib import Path

import torch

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

    return Snapshot("fb15k-237", entities, relations, tensor(rows["train"]), tensor(rows["valid"]), tensor(rows["test"]))


def build_bundle(directory: Path, plugin: str, decoder: str, dim: int) -> tuple[Path, object]:
    from kgserver.registry import get_model
    from kgserver.tracking.bundle import save_bundle

    snapshot = fb15k237_snapshot()
    torch.manual_seed(0)
    model_class = get_model(plugin)
    hparams = model_class.hyperparameters.from_dict({"embedding_dim": dim, "decoder": decoder})
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams).eval()
    return save_bundle(directory / "bundle", model, snapshot), snapshot


def in_process_rate(bundle: Path, batch: int, k: int, seconds: float) -> float:
    """Queries/s of ``score`` against every entity + ``topk`` for batches of ``batch`` queries."""
    from kgserver.tracking.bundle import load_bundle

    loaded = load_bundle(bundle)
    entity_emb, relation_emb = loaded.encode()
    n, r = entity_emb.shape[0], relation_emb.shape[0] // 2
    generator = torch.Generator().manual_seed(batch)
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            heads = torch.randint(0, n, (batch,), generator=generator)
            rels = torch.randint(0, r, (batch,), generator=generator)
            scores = loaded.model.score(entity_emb[heads], relation_emb[rels], entity_emb)
            torch.topk(scores, k, dim=1).indices.tolist()
            done += batch
    return done / (time.perf_counter() - started)


def start_server(bundle: Path, log_path: Path, extra: list[str]) -> tuple[subprocess.Popen, str, list[str]]:
    command = [str(Path(sys.executable).parent / "kgserver"), "serve", "--model", str(bundle), "--port", "0",
               "--poll-seconds", "0", *extra]
    log = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{text}")
        found = re.search(r"listening on (\S+:\d+)", text)
        if found and "ready (pid" in text:
            return process, found.group(1), command
        time.sleep(0.2)
    process.terminate()
    raise TimeoutError(log_path.read_text(errors="replace"))


async def closed_loop(address: str, queries: list[tuple[str, str]], clients: int, k: int, seconds: float) -> tuple[list[float], float]:
    """``clients`` concurrent callers, one channel each, one query per call; latencies in seconds."""
    import grpc

    from kgserver.proto.v1 import kgserver_pb2 as pb
    from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc

    requests = [pb.PredictRequest(queries=[pb.Query(entity=h, relation=r)], k=k) for h, r in queries]
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(index: int) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            predict = pb_grpc.KnowledgeGraphCompletionStub(channel).PredictTails
            n = index
            while True:
                started = time.perf_counter()
                if started >= stop_at:
                    return
                await predict(requests[n % len(requests)], timeout=30)
                latencies.append(time.perf_counter() - started)
                n += clients

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return latencies, time.perf_counter() - started


def canned_server(port_queue) -> None:  # type: ignore[no-untyped-def]
    """The framework's ceiling: the same gRPC server setup answering a canned top-10 without any work."""
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
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=128), options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("kgserver.v1.KnowledgeGraphCompletion", {"PredictTails": handler}),)
    )
    port_queue.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", default="compgcn")
    parser.add_argument("--decoder", default="complex", choices=["complex", "distmult", "conve"],
                        help="the plugins' default is complex")
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per concurrency level")
    parser.add_argument("--torch-threads", type=int, default=max(1, (os.cpu_count() or 1) - 1),
                        help="tensor threads, in-process and in the server alike (default: the server's)")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `kgserver serve` option (repeatable)")
    options = parser.parse_args()
    torch.set_num_threads(options.torch_threads)

    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="kgserver-bench-") as scratch:
        work = Path(scratch)
        started = time.perf_counter()
        bundle, snapshot = build_bundle(work, options.plugin, options.decoder, options.dim)
        print(f"model: {options.plugin} + {options.decoder}, dim {options.dim}, {snapshot.num_entities} entities, "
              f"{snapshot.num_relations} relations, {len(snapshot.train)} training triples "
              f"(random weights; bundle built in {time.perf_counter() - started:.1f} s)")

        inline = {b: in_process_rate(bundle, b, options.k, min(options.seconds, 4.0)) for b in options.clients}

        server_args = ["--torch-threads", str(options.torch_threads), *options.server_arg]
        process, address, command = start_server(bundle, work / "server.log", server_args)
        print(f"server: {' '.join(command[1:])}")
        generator = torch.Generator().manual_seed(1)
        heads = torch.randint(0, snapshot.num_entities, (4096,), generator=generator).tolist()
        rels = torch.randint(0, snapshot.num_relations, (4096,), generator=generator).tolist()
        queries = [(snapshot.entities[h], snapshot.relations[r]) for h, r in zip(heads, rels)]
        rows = []
        try:
            for clients in options.clients:
                asyncio.run(closed_loop(address, queries, clients, options.k, 1.0))  # warm-up
                latencies, seconds = asyncio.run(closed_loop(address, queries, clients, options.k, options.seconds))
                rows.append((clients, percentile(latencies, 0.5), percentile(latencies, 0.99), len(latencies) / seconds))
        finally:
            process.terminate()
            code = process.wait(60)
        log = (work / "server.log").read_text(errors="replace")
        batching = re.findall(r"scorer: .*", log)

        import multiprocessing

        context = multiprocessing.get_context("spawn")
        ports = context.Queue()
        canned = context.Process(target=canned_server, args=(ports,), daemon=True)
        canned.start()
        canned_address = f"127.0.0.1:{ports.get(timeout=60)}"
        ceiling = {}
        for clients in options.clients:
            asyncio.run(closed_loop(canned_address, queries, clients, options.k, 1.0))
            latencies, seconds = asyncio.run(closed_loop(canned_address, queries, clients, options.k, options.seconds))
            ceiling[clients] = (len(latencies) / seconds, percentile(latencies, 0.99))
        canned.terminate()

    print(f"\ntail prediction top-{options.k}, one query per request, closed loop, {options.seconds:.0f} s per level")
    print("| clients | p50 ms | p99 ms | served req/s | in-process queries/s (batch = clients) | served / in-process "
          "| canned answer, no model: req/s, p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for clients, p50, p99, rate in rows:
        print(f"| {clients} | {p50 * 1e3:.2f} | {p99 * 1e3:.2f} | {rate:.0f} | {inline[clients]:.0f} "
              f"| {rate / inline[clients]:.0%} | {ceiling[clients][0]:.0f}, {ceiling[clients][1] * 1e3:.2f} |")
    print(f"server exit code after SIGTERM: {code}; {batching[-1] if batching else ''}")


if __name__ == "__main__":
    main()
