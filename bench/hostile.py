"""Hostile-load benchmark: valid, invalid and oversized requests at once against the real ``kgserver serve``.

A model the size of FB15k-237 (its vocabulary with Freebase IRIs,
``http://rdf.freebase.com/ns/m.027rn``, and its training graph; random weights,
since answers' correctness is checked elsewhere and cost does not depend on
training) is served by the real ``kgserver serve`` process. ``--threads`` client
threads, one channel each, send a rotation of requests for ``--seconds``:

* valid: small predictions, triple scores, embeddings, model listings, and *large*
  predictions (a few hundred queries at ``--max-k``, tens of MB of answer);
* invalid: unknown IRIs and models, k out of range, too many queries, IRIs of 10 KB
  and 1 MB, a 100 KB model name, bytes that are not a protobuf;
* oversized: legal counts whose answer could exceed the per-response limit.

Every call's status is compared with the expected one; error messages must be
short, name their culprit and hold no traceback. The server's anonymous RSS (its
heap: :func:`anonymous_rss`) is read after a warm-up of the same mix and again
after the run. The warm-up runs in rounds until it changes by less than 3% over a round (at most
``--warmup-rounds``): the allocator keeps the high-water mark of the large answers
built at once (bounded by the response budget), and the run measures growth from
there, which is what a leak would show. The script prints its figures
and exits 1 if any valid request failed, any invalid one got another code, or
it grew by more than 10%. ``--tiny`` runs the same mix on a 300-entity model
(the test suite does, briefly).

``--burst N`` measures something else instead: N clients ask at once for answers
of about 70% of the per-response limit (47 MB at 64 MiB), and the server's anonymous RSS is
sampled throughout; the status codes and that memory before, at the peak and after are
printed. Without a response budget every such answer is built at once.

    .venv/bin/python bench/hostile.py [--threads 32] [--seconds 60] [--tiny] [--burst N]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import torch

from kgserver.graph import Snapshot
from kgserver.proto.v1 import kgserver_pb2 as pb
from kgserver.proto.v1 import kgserver_pb2_grpc as pb_grpc

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
serve_bench = importlib.import_module("serve")  # bench/serve.py: the FB15k-237 snapshot, starting the server
freebase_iri = importlib.import_module("import").freebase_iri  # bench/import.py: Freebase's RDF naming

OK = grpc.StatusCode.OK
CLIENT_OPTIONS = [("grpc.max_receive_message_length", 64 * 2**20), ("grpc.max_send_message_length", 64 * 2**20)]
SETTLE_SECONDS = 3.0
"""RSS "after" is read this long after the last call, once the server has finished sending and freeing."""
MAX_DETAILS = 2048
"""Longest status message accepted: the server quotes at most a short prefix of any request string."""


@dataclass
class Case:
    """One kind of request in the rotation and the status it must get."""

    name: str
    method: str
    request: Any  # a message, or raw bytes for "raw"
    expected: grpc.StatusCode
    mentions: str = ""  # a string the status message must contain (the culprit)

    @property
    def valid(self) -> bool:
        return self.expected == OK


@dataclass
class Tally:
    calls: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def fb15k237_freebase() -> Snapshot:
    """FB15k-237 with entities and relations named by their Freebase IRIs."""
    snapshot = serve_bench.fb15k237_snapshot()
    return Snapshot(
        snapshot.name,
        [freebase_iri(e) for e in snapshot.entities],
        [freebase_iri(r) for r in snapshot.relations],
        snapshot.train,
        snapshot.valid,
        snapshot.test,
    )


def tiny_snapshot(entities: int = 300, relations: int = 5, triples: int = 2000) -> Snapshot:
    """A random graph whose entity IRIs are 170 characters long (the issue's example length)."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.stack(
        [
            torch.randint(0, entities, (triples,), generator=generator),
            torch.randint(0, relations, (triples,), generator=generator),
            torch.randint(0, entities, (triples,), generator=generator),
        ],
        1,
    )
    prefix = "http://example.org/" + "long-path-segment/" * 8
    names = [f"{prefix}{'e' * (170 - len(prefix) - 6)}{i:06d}" for i in range(entities)]
    return Snapshot(
        "tiny", names, [f"http://example.org/relation/{i}" for i in range(relations)], rows, rows[:0], rows[:0]
    )


def build_bundle(directory: Path, snapshot: Snapshot, dim: int) -> Path:
    from kgserver.registry import get_model
    from kgserver.tracking.bundle import save_bundle

    torch.manual_seed(0)
    model_class = get_model("compgcn")
    hparams = model_class.hyperparameters.from_dict({"embedding_dim": dim})
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams).eval()
    return save_bundle(directory / "bundle", model, snapshot)


def make_mix(snapshot: Snapshot, max_k: int, max_batch: int, limit: int) -> list[Case]:
    """The rotation: valid requests of every kind (one large), invalid ones, one oversized."""
    generator = torch.Generator().manual_seed(1)
    heads = torch.randint(0, snapshot.num_entities, (max_batch,), generator=generator).tolist()
    rels = torch.randint(0, snapshot.num_relations, (max_batch,), generator=generator).tolist()
    queries = [pb.Query(entity=snapshot.entities[h], relation=snapshot.relations[r]) for h, r in zip(heads, rels)]
    triples = [
        pb.Triple(head=q.entity, relation=q.relation, tail=snapshot.entities[i]) for i, q in enumerate(queries[:8])
    ]
    lengths = sorted(len(iri.encode()) for iri in snapshot.entities)
    k = min(max_k, snapshot.num_entities)
    most_per_query = sum(lengths[-k:]) + 9 * k + 8  # the server's bound: the k longest IRIs + framing
    least_per_query = sum(lengths[:k]) + 7 * k
    large = max(1, min(max_batch, int(0.15 * limit / most_per_query)))
    oversized = min(max_batch, limit // least_per_query + 1)
    if oversized * least_per_query <= limit:
        raise SystemExit(f"no legal request exceeds the {limit:,}-byte limit here; raise --max-k or --max-batch")
    long_iri, huge_iri, huge_model = "http://x.org/" + "a" * 10_000, "http://x.org/" + "b" * 1_000_000, "m" * 100_000
    good = queries[0]
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    return [
        Case("tails, 1 query, k=10", "PredictTails", pb.PredictRequest(queries=queries[:1], k=10), OK),
        Case(
            "heads, 4 queries, k=10, filtered",
            "PredictHeads",
            pb.PredictRequest(queries=queries[1:5], k=10, filter_known=True),
            OK,
        ),
        Case("score 8 triples", "ScoreTriples", pb.ScoreTriplesRequest(triples=triples), OK),
        Case(
            "embed 4 entities",
            "GetEntityEmbeddings",
            pb.GetEntityEmbeddingsRequest(entities=[q.entity for q in queries[:4]]),
            OK,
        ),
        Case("list models", "ListModels", pb.ListModelsRequest(), OK),
        Case(
            f"large: tails, {large} queries, k={k}", "PredictTails", pb.PredictRequest(queries=queries[:large], k=k), OK
        ),
        Case("tails, 1 query, k=10 (again)", "PredictTails", pb.PredictRequest(queries=queries[5:6], k=10), OK),
        Case(
            "unknown entity",
            "PredictTails",
            pb.PredictRequest(queries=[pb.Query(entity="urn:nope:e", relation=good.relation)], k=3),
            not_found,
            "urn:nope:e",
        ),
        Case(
            "unknown relation",
            "PredictHeads",
            pb.PredictRequest(queries=[pb.Query(entity=good.entity, relation="urn:nope:r")], k=3),
            not_found,
            "urn:nope:r",
        ),
        Case(
            "10 KB IRI",
            "PredictTails",
            pb.PredictRequest(queries=[pb.Query(entity=long_iri, relation=good.relation)], k=3),
            invalid,
            long_iri[:100],
        ),
        Case(
            "1 MB IRI",
            "GetEntityEmbeddings",
            pb.GetEntityEmbeddingsRequest(entities=[huge_iri]),
            invalid,
            huge_iri[:100],
        ),
        Case(
            "100 KB model name",
            "PredictTails",
            pb.PredictRequest(model=huge_model, queries=[good], k=3),
            not_found,
            huge_model[:100],
        ),
        Case("k=0", "PredictTails", pb.PredictRequest(queries=[good], k=0), invalid, "k must be"),
        Case("k=max_k+1", "PredictHeads", pb.PredictRequest(queries=[good], k=max_k + 1), invalid, "k must be"),
        Case(
            "max_batch+1 queries",
            "PredictTails",
            pb.PredictRequest(queries=[good] * (max_batch + 1), k=1),
            invalid,
            f"got {max_batch + 1}",
        ),
        Case("not a protobuf", "raw", b"\xff\xfe not a protobuf \x00", invalid, "not a valid"),
        Case(
            f"oversized: tails, {oversized} queries, k={k}",
            "PredictTails",
            pb.PredictRequest(queries=queries[:oversized], k=k),
            invalid,
            "response budget",
        ),
    ]


def call(channel: grpc.Channel, stub: pb_grpc.KnowledgeGraphCompletionStub, case: Case) -> tuple[grpc.StatusCode, str]:
    try:
        if case.method == "raw":
            channel.unary_unary("/kgserver.v1.KnowledgeGraphCompletion/PredictTails")(case.request, timeout=120)
        else:
            getattr(stub, case.method)(case.request, timeout=120)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""
    return OK, ""


def hammer(address: str, mix: list[Case], threads: int, seconds: float) -> Tally:
    """``threads`` clients, one channel each, each walking the rotation from its own offset until time is up."""
    tally = Tally()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        counts: Counter[str] = Counter()
        with grpc.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
            stub = pb_grpc.KnowledgeGraphCompletionStub(channel)
            n = index
            while time.monotonic() < stop_at:
                case = mix[n % len(mix)]
                n += 1
                code, details = call(channel, stub, case)
                counts[case.name] += 1
                if code != case.expected:
                    kind = "valid request failed" if case.valid else "wrong code"
                    tally.problem(
                        f"{kind}: {case.name}: expected {case.expected.name}, got {code.name}: {details[:200]}"
                    )
                elif not case.valid and (
                    len(details) > MAX_DETAILS or case.mentions not in details or "Traceback" in details
                ):
                    tally.problem(f"bad message for {case.name} ({len(details)} chars): {details[:200]}")
        with tally.lock:
            tally.calls.update(counts)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return tally


def anonymous_rss(process: psutil.Process) -> int:
    """Bytes of the process's resident anonymous memory (``RssAnon``: RSS less its file-backed and
    shared pages), the heap that a leak grows. Not the whole RSS: a proactive reclaimer (DAMON's
    pageout, seen on one machine) drops mapped library pages at any time, which can shrink RSS
    under load and hide growth."""
    info = process.memory_info()
    return int(info.rss - info.shared)


def warm_up(
    address: str, mix: list[Case], threads: int, seconds: float, most_rounds: int, server: psutil.Process
) -> tuple[Tally, list[int]]:
    """Rounds of the mix until the server's anonymous RSS changes by less than 3% over one; its tally
    and that memory after each round."""
    tally = Tally()
    rounds = [anonymous_rss(server)]
    while len(rounds) <= most_rounds and (len(rounds) < 3 or abs(rounds[-1] - rounds[-2]) > 0.03 * rounds[-2]):
        tally.problems += hammer(address, mix, threads, seconds).problems
        time.sleep(SETTLE_SECONDS)
        rounds.append(anonymous_rss(server))
    return tally, rounds


def burst(address: str, server: psutil.Process, snapshot: Snapshot, clients: int, k: int, limit: int) -> None:
    """``clients`` simultaneous answers of ~70% of ``limit`` each; prints the codes and the anonymous
    RSS before, at the peak and after."""
    per_query = sum(sorted(len(iri.encode()) for iri in snapshot.entities)[-k:]) + 9 * k + 8
    size = min(len(snapshot.entities), int(0.7 * limit / per_query))
    request = pb.PredictRequest(
        queries=[pb.Query(entity=snapshot.entities[i], relation=snapshot.relations[0]) for i in range(size)], k=k
    )
    case = Case(f"burst: tails, {size} queries, k={k}", "PredictTails", request, OK)
    codes: Counter[str] = Counter()
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            samples.append(anonymous_rss(server))

    def client() -> None:
        with grpc.insecure_channel(address, options=CLIENT_OPTIONS) as channel:
            code, _ = call(channel, pb_grpc.KnowledgeGraphCompletionStub(channel), case)
        codes[code.name] += 1

    before = anonymous_rss(server)
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    at_end = anonymous_rss(server)
    time.sleep(SETTLE_SECONDS)
    done.set()
    sampler.join()
    after = anonymous_rss(server)
    print(f"\n{clients} clients at once: {case.name} (answer bound ~{size * per_query / 2**20:.0f} MiB each)")
    print(f"status codes: {dict(codes)} in {elapsed:.1f} s")
    print(
        f"server anonymous RSS: {before / 2**20:.0f} MiB before -> {max(samples, default=after) / 2**20:.0f} MiB peak "
        f"-> {at_end / 2**20:.0f} MiB when the last answer arrived "
        f"-> {after / 2**20:.0f} MiB {SETTLE_SECONDS:.0f} s later"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds per warm-up round (default: seconds / 4, at most 15)"
    )
    parser.add_argument("--warmup-rounds", type=int, default=6, help="most warm-up rounds (until RSS is steady)")
    parser.add_argument(
        "--tiny", action="store_true", help="a 300-entity model with 170-character IRIs instead of FB15k-237"
    )
    parser.add_argument("--dim", type=int, default=200)
    parser.add_argument("--server-arg", action="append", default=[], help="extra `kgserver serve` option (repeatable)")
    parser.add_argument("--burst", type=int, default=0, help="instead of the mix: this many large answers at once")
    options = parser.parse_args()
    warmup = options.warmup if options.warmup is not None else min(15.0, options.seconds / 4)

    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"machine: {platform.node()}, {cpu}, {os.cpu_count()} CPUs; "
        f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="kgserver-hostile-") as scratch:
        work = Path(scratch)
        snapshot = tiny_snapshot() if options.tiny else fb15k237_freebase()
        bundle = build_bundle(work, snapshot, 16 if options.tiny else options.dim)
        print(
            f"model: compgcn, dim {16 if options.tiny else options.dim}, {snapshot.num_entities} entities "
            f"(IRIs of {min(map(len, snapshot.entities))}-{max(map(len, snapshot.entities))} characters), "
            f"{snapshot.num_relations} relations, random weights"
        )
        server_args = ["--torch-threads", "1", *options.server_arg]
        process, address, command = serve_bench.start_server(bundle, work / "server.log", server_args)
        print(f"server: {' '.join(command[1:])}")
        try:
            with grpc.insecure_channel(address) as channel:
                listing = pb_grpc.KnowledgeGraphCompletionStub(channel).ListModels(pb.ListModelsRequest(), timeout=30)
            limit = _response_limit(options.server_arg)
            if options.burst:
                burst(address, psutil.Process(process.pid), snapshot, options.burst, listing.max_k, limit)
                return 0
            mix = make_mix(snapshot, listing.max_k, listing.max_batch, limit)
            server = psutil.Process(process.pid)
            warm, rounds = warm_up(address, mix, options.threads, warmup, options.warmup_rounds, server)
            before = anonymous_rss(server)
            started = time.monotonic()
            tally = hammer(address, mix, options.threads, options.seconds)
            elapsed = time.monotonic() - started
            at_end = anonymous_rss(server)
            time.sleep(SETTLE_SECONDS)
            after = anonymous_rss(server)
            alive = process.poll() is None
        finally:
            process.terminate()
            code = process.wait(120)
        log = (work / "server.log").read_text(errors="replace")

    problems = warm.problems + tally.problems
    growth = (after - before) / before
    refusals = len(re.findall(r"WARNING .* refused: ", log))
    print(
        f"\n{options.threads} threads x {options.seconds:.0f} s, one channel each, after warm-up rounds of "
        f"{warmup:.0f} s with server anonymous RSS {' -> '.join(f'{r / 2**20:.0f}' for r in rounds)} MiB; "
        f"per-response limit {limit:,} bytes"
    )
    print("| request | expected | calls |")
    print("|---|---|---:|")
    for case in mix:
        print(f"| {case.name} | {case.expected.name} | {tally.calls[case.name]} |")
    valid = sum(tally.calls[c.name] for c in mix if c.valid)
    invalid = sum(tally.calls[c.name] for c in mix if not c.valid)
    print(
        f"calls: {valid + invalid} in {elapsed:.1f} s ({valid} valid, {invalid} invalid or oversized); "
        f"problems: {len(problems)} (warm-up included)"
    )
    for text in problems[:10]:
        print(f"  {text}")
    print(
        f"server anonymous RSS: {before / 2**20:.0f} MiB after warm-up -> {at_end / 2**20:.0f} MiB at the end "
        "of the run "
        f"-> {after / 2**20:.0f} MiB {SETTLE_SECONDS:.0f} s later ({growth:+.1%}); "
        f"server alive: {alive}; exit code after SIGTERM: {code}"
    )
    print(f"server log: {refusals} refusal lines, {log.count('Traceback')} tracebacks, {len(log):,} bytes")
    failed = bool(problems) or growth > 0.10 or not alive or code != 0 or "Traceback" in log
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


def _response_limit(server_args: list[str]) -> int:
    """The per-response limit the server applies: the 64 MiB message limit, or --response-memory-mb if smaller."""
    memory_mb = 128
    for i, arg in enumerate(server_args):
        if arg == "--response-memory-mb":
            memory_mb = int(server_args[i + 1])
        elif arg.startswith("--response-memory-mb="):
            memory_mb = int(arg.split("=", 1)[1])
    return min(64 * 2**20, memory_mb * 2**20)


if __name__ == "__main__":
    sys.exit(main())
