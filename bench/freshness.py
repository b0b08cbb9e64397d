"""Freshness benchmark: how soon entities imported into the store are answered by a running server.

Everything runs through the real command line, as a user would, in a scratch
``KGSERVER_HOME`` (and ``HOME``): ``kgserver import`` of a dataset without some
entities, ``kgserver train`` of a model that can embed unseen entities, ``kgserver
serve --db`` following the store, then ``kgserver import`` of the missing entities
while it serves.

Protocol (seeded): of the entities with at least 4 triples in the dataset (train,
valid and test), three disjoint sets of "emerging" entities are drawn, of 1, 100
and 1,000 (``--sizes``). Every triple touching an emerging entity is left out of
the training import (all three splits). A triple touching emerging entities
belongs to the set of its latest emerging endpoint (``--sizes`` order), so each
set's file holds the triples linking its entities to the trained graph, to earlier
sets and to each other. Sets are drawn latest first, and an entity joins an
earlier set only if one of its triples does not lead into a later one, so every
emerging entity has a triple of a trained relation in its own set's file (checked).
An entity with fewer triples whose triples all touch emerging entities arrives with
them and is new to the server too (the server's log counts it).

The server runs with ``--refresh-seconds`` (default 1). For each set in order,
``kgserver import SET.nt --json`` runs; the commit is when its JSON summary (the
new revision) arrives on its stdout, printed right after the commit (the process
exits some tenths of a second later, or more on a busy machine). From then on,
every ``--poll-ms`` a client asks ``PredictTails`` (k=1) about every entity of the
set, in batches of the server's largest batch; a round stops at the first batch
answered NOT_FOUND (before any scoring) or from an older store revision. The
entities are answerable when a whole round answers OK from the new revision or a
later one: "answerable after" is the time from the commit to the end of that round.
The server's log gives its refresh time for that revision (read, re-encoded and
warmed in X s) and the wall-clock time it swapped it in, which splits "answerable
after" into the wait for the next check, the refresh, and the client's next round.

Commands are printed as run, with the scratch directory shown as ``$SCRATCH``.

A refresh with nothing new: the server process's CPU time (user + system, all its
threads) over ``--idle-seconds`` with no request and no import, once on the server
above and once on the same server started again (same model, same store) with
``--refresh-seconds`` ``--idle-refresh-seconds`` (0.05: 20 checks a second). The
second one's CPU time divided by its checks is an upper bound (everything else the
idle server does is in it too); the difference between the two over the
difference in checks is an estimate without that.

Training is short (``--epochs 1``, ``--max-minutes``): answer quality is measured by
``bench/inductive.py``, not here; the timing depends on the model's size (the
plugin's default dimension) and the graph, not on its weights.

    .venv/bin/python bench/freshness.py --dataset codex-s
    .venv/bin/python bench/freshness.py --dataset fb15k-237 --max-minutes 2.5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import grpc
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import start_server, stop  # noqa: E402
from train import read_splits  # noqa: E402  # the benchmarks' one reader of a dataset's splits

from kgserver.client import KGClient, RequestFailed  # noqa: E402

KGSERVER = Path(sys.executable).parent / "kgserver"
MIN_TRIPLES = 4
GRAPH = "fresh"
REFRESH_LOG = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO kgserver\.serving\.watcher: .*: now at store revision "
    r"(?P<revision>\d+) \((?P<entities>\d+) entities, (?P<new>\d+) new since training; read, re-encoded and "
    r"warmed in (?P<seconds>[\d.]+) s\)",
    re.MULTILINE,
)


@dataclass
class EmergingSet:
    """One import's worth of emerging entities and its triples (ids of the dataset)."""

    entities: list[int]
    triples: list[tuple[int, int, int]]
    queries: list[tuple[int, int]]
    """``(entity, relation)`` per entity: a trained relation of one of its triples in this set."""


@dataclass
class Plan:
    """The training import's splits, and the emerging sets in import order."""

    training: dict[str, list[tuple[int, int, int]]]
    sets: list[EmergingSet]


def plan(ids: dict[str, list[list[int]]], num_entities: int, sizes: Sequence[int], seed: int) -> Plan:
    """The training splits and the emerging sets (see the module doc)."""
    everything = [(h, r, t) for part in ids.values() for h, r, t in part]
    degree = [0] * num_entities
    around: list[list[tuple[int, int, int]]] = [[] for _ in range(num_entities)]
    for h, r, t in everything:
        degree[h] += 1
        degree[t] += 1
        around[h].append((h, r, t))
        if t != h:
            around[t].append((h, r, t))
    eligible = [e for e in range(num_entities) if degree[e] >= MIN_TRIPLES]
    random.Random(seed).shuffle(eligible)
    set_of: dict[int, int] = {}
    position = 0
    for index in reversed(range(len(sizes))):  # latest first: an earlier set's entity needs a triple it keeps
        chosen = 0
        while chosen < sizes[index]:
            if position == len(eligible):
                raise SystemExit(f"too few entities with at least {MIN_TRIPLES} triples for sets of {list(sizes)}")
            entity = eligible[position]
            position += 1
            if any(set_of.get(h if t == entity else t, -1) <= index for h, _, t in around[entity]):
                set_of[entity] = index
                chosen += 1

    def owner(triple: tuple[int, int, int]) -> int:
        return max(set_of.get(triple[0], -1), set_of.get(triple[2], -1))

    training = {split: [(h, r, t) for h, r, t in part if owner((h, r, t)) < 0] for split, part in ids.items()}
    trained_relations = {r for _, r, _ in training["train"]}
    sets = [EmergingSet([], [], []) for _ in sizes]
    for triple in everything:
        if owner(triple) >= 0:
            sets[owner(triple)].triples.append(triple)
    for index, emerging in enumerate(sets):
        emerging.entities = sorted(e for e, s in set_of.items() if s == index)
        relation_of: dict[int, int] = {}
        for h, r, t in emerging.triples:
            if r in trained_relations:
                for entity in (h, t):
                    if set_of.get(entity) == index:
                        relation_of.setdefault(entity, r)
        missing = [e for e in emerging.entities if e not in relation_of]
        if missing:
            raise SystemExit(f"set {index}: {len(missing)} entities have no triple of a trained relation; "
                             "try another --seed")  # fmt: skip
        emerging.queries = [(e, relation_of[e]) for e in emerging.entities]
    return Plan(training, sets)


class Namer:
    """IRIs of the dataset's entities and relations in a fixed namespace."""

    def __init__(self, dataset: str, entities: list[str], relations: list[str]) -> None:
        base = f"http://bench.kgserver.example/{dataset}/"
        self.entities = [base + "entity/" + quote(name.lstrip("/"), safe="/._-~") for name in entities]
        self.relations = [base + "relation/" + quote(name.lstrip("/"), safe="/._-~") for name in relations]

    def write(self, path: Path, triples: Sequence[tuple[int, int, int]]) -> Path:
        e, r = self.entities, self.relations
        path.write_text("".join(f"<{e[h]}> <{r[p]}> <{e[t]}> .\n" for h, p, t in triples), encoding="utf-8")
        return path


def run(command: list[str], env: dict[str, str]) -> dict[str, object]:
    """The JSON object a ``kgserver ... --json`` command prints (if it fails: exit with its stderr)."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"$ {' '.join(command)}\nexited {done.returncode}:\n{done.stderr}")
    return dict(json.loads(done.stdout))


def start_import(
    command: list[str], env: dict[str, str], stderr: Path
) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start ``kgserver import --json`` and return once it has printed its summary, which it
    does right after its commit; the process is left to exit on its own."""
    with open(stderr, "w") as errors:  # the child keeps its own descriptor
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        code = process.wait()
        raise SystemExit(f"$ {' '.join(command)}\nexited {code}:\n{stderr.read_text(errors='replace')}")
    return process, dict(json.loads(line))


def finished(process: subprocess.Popen[str], command: list[str], stderr: Path) -> None:
    """Wait for an import started by :func:`start_import` (exits with its stderr if it failed)."""
    if process.wait() != 0:
        raise SystemExit(f"$ {' '.join(command)}\nexited {process.returncode}:\n{stderr.read_text(errors='replace')}")


def idle_cpu(server: subprocess.Popen[bytes], seconds: float) -> tuple[float, float]:
    """The server's CPU seconds (user + system, all threads) over ``seconds`` of no requests, and the wall time."""
    process = psutil.Process(server.pid)
    before, started = cpu_seconds(process), time.monotonic()
    time.sleep(seconds)
    return cpu_seconds(process) - before, time.monotonic() - started


def answerable_round(client: KGClient, queries: list[tuple[str, str]], batch: int, revision: int) -> bool:
    """Ask about every query once (stopping at the first batch not answered from ``revision`` on)."""
    for start in range(0, len(queries), batch):
        try:
            answer = client.predict_tails(queries[start : start + batch], k=1)
        except RequestFailed as error:
            if error.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        if answer.store_revision < revision:
            return False
    return True


def refresh_of(log_path: Path, revision: int, wait: float = 30.0) -> re.Match[str]:
    """The server's log line for swapping in ``revision`` (it follows the swap, so it may lag a little)."""
    deadline = time.monotonic() + wait
    while True:
        for found in REFRESH_LOG.finditer(log_path.read_text(errors="replace")):
            if int(found["revision"]) == revision:
                return found
        if time.monotonic() >= deadline:
            raise SystemExit(f"no refresh to revision {revision} in the server's log {log_path}")
        time.sleep(0.05)


def log_time(stamp: str) -> float:
    """``time.time()`` of a log timestamp (logging's asctime: local time, milliseconds)."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="codex-s", help="a folder of ../shared/datasets")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000], help="emerging set sizes, in order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="compgcn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-minutes", type=float, default=3.0, help="training budget")
    parser.add_argument("--threads", type=int, default=1, help="training threads (train --threads)")
    parser.add_argument("--torch-threads", type=int, default=1, help="serve --torch-threads")
    parser.add_argument("--refresh-seconds", type=float, default=1.0, help="serve --refresh-seconds")
    parser.add_argument("--poll-ms", type=float, default=25.0, help="pause between a client's rounds")
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle interval for the no-change cost")
    parser.add_argument(
        "--idle-refresh-seconds", type=float, default=0.05, help="the no-change server's --refresh-seconds"
    )
    args = parser.parse_args()

    begun = time.monotonic()
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu_model()}), "
        f"load average {load()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    entities, relations, ids = read_splits(args.dataset)
    layout = plan(ids, len(entities), args.sizes, args.seed)
    namer = Namer(args.dataset, entities, relations)

    with tempfile.TemporaryDirectory(prefix="kgserver-freshness-") as scratch:
        work = Path(scratch)
        home = work / "home"
        home.mkdir()
        env = {**os.environ, "KGSERVER_HOME": str(home), "HOME": str(home)}
        env.pop("KGSERVER_DATABASE_URL", None)
        env.pop("MLFLOW_TRACKING_URI", None)
        db = f"sqlite:///{home / 'store.db'}"
        kg = str(KGSERVER)

        def shown(command: list[str]) -> str:
            return "$ " + " ".join(["kgserver", *command[1:]]).replace(scratch, "$SCRATCH")

        files = [namer.write(work / f"{split}.nt", triples) for split, triples in layout.training.items()]
        command = [kg, "import", *map(str, files), "--graph", GRAPH, "--db", db, "--json"]
        imported = run(command, env)
        print(shown(command))
        print(
            f"training import: {imported['added']} triples "
            + ", ".join(f"{split} {len(triples)}" for split, triples in layout.training.items())
            + f" in {imported['seconds']} s, revision {imported['revision']}"
        )
        command = [
            kg, "train", "--graph", GRAPH, "--model", args.model, "--set", "unseen_entity_rate=0.1",
            "--epochs", str(args.epochs), "--max-minutes", str(args.max_minutes), "--threads", str(args.threads),
            "--seed", str(args.seed), "--no-tracking", "--db", db, "--json",
        ]  # fmt: skip
        started = time.monotonic()
        trained = run(command, env)
        print(shown(command))
        print(
            f"trained in {time.monotonic() - started:.0f} s (epochs {trained.get('epochs')}, "
            f"stop {trained.get('stop_reason')}, test MRR {trained.get('test_mrr')})"
        )

        serve = [
            kg, "serve", "--model", str(trained["bundle_path"]), "--db", db, "--port", "0", "--poll-seconds", "0",
            "--refresh-seconds", str(args.refresh_seconds), "--torch-threads", str(args.torch_threads),
        ]  # fmt: skip
        log_path = work / "serve.log"
        server, address = start_server(serve, log_path, env=env, timeout=900)
        print(shown(serve))
        rows = []
        try:
            with KGClient(address) as client:
                served = client.list_models()
                info = served.models[0]
                print(
                    f"served: {info.plugin}, dim {info.embedding_dim}, {info.num_entities} entities, "
                    f"{info.num_relations} relations; max batch {served.max_batch}; load average {load()}"
                )
                for size, emerging in zip(args.sizes, layout.sets):
                    path = namer.write(work / f"emerging-{size}.nt", emerging.triples)
                    command = [kg, "import", str(path), "--graph", GRAPH, "--db", db, "--json"]
                    errors = work / f"import-{size}.err"
                    importer, summary = start_import(command, env, errors)
                    committed = time.time()
                    revision = int(summary["revision"])  # type: ignore[call-overload]
                    queries = [(namer.entities[e], namer.relations[r]) for e, r in emerging.queries]
                    rounds, exited = 0, None
                    try:
                        while True:  # from the commit on, whether or not the import process has exited yet
                            rounds += 1
                            if answerable_round(client, queries, served.max_batch, revision):
                                answered = time.time()
                                break
                            if exited is None and importer.poll() is not None:
                                exited = time.time()
                            if time.time() - committed > 600:
                                raise SystemExit(f"set of {size}: not answerable 600 s after the commit")
                            time.sleep(args.poll_ms / 1e3)
                    finally:
                        importer.wait()  # past its commit, it only has to exit
                    finished(importer, command, errors)
                    refresh = refresh_of(log_path, revision)
                    swapped = log_time(refresh["at"])
                    seconds = float(refresh["seconds"])
                    rows.append(
                        {
                            "entities": size,
                            "triples": summary["added"],
                            "revision": revision,
                            "served_entities": int(refresh["entities"]),
                            "new_since_training": int(refresh["new"]),
                            "answerable_s": answered - committed,
                            "refresh_s": seconds,
                            "wait_s": swapped - seconds - committed,
                            "after_swap_s": answered - swapped,
                            "import_exited_s": None if exited is None else exited - committed,
                            "rounds": rounds,
                        }
                    )
                    print(shown(command))
                    print(json.dumps(rows[-1]), flush=True)

            time.sleep(args.refresh_seconds)  # nothing pending
            idle = [idle_cpu(server, args.idle_seconds)]
        finally:
            code = stop(server)

        # The same server following the same store, checking every --idle-refresh-seconds.
        serve[serve.index("--refresh-seconds") + 1] = str(args.idle_refresh_seconds)
        server, _ = start_server(serve, work / "serve-idle.log", env=env, timeout=900)
        try:
            time.sleep(1.0)
            idle.append(idle_cpu(server, args.idle_seconds))
        finally:
            idle_code = stop(server)
        print(
            f"\n{args.dataset}, {info.plugin} dim {info.embedding_dim}, trained on {info.num_entities} entities; "
            f"serve --refresh-seconds {args.refresh_seconds}; client rounds every {args.poll_ms:.0f} ms"
        )
        print(
            "| new entities | triples imported | served entities after | answerable after commit s "
            "| wait for check s | refresh (read, re-encode, warm) s | swap to answer s |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['entities']} | {row['triples']} | {row['served_entities']} | {row['answerable_s']:.2f} "
                f"| {row['wait_s']:.2f} | {row['refresh_s']:.2f} | {row['after_swap_s']:.2f} |"
            )
        checks = [wall / refresh for (_, wall), refresh in zip(idle, (args.refresh_seconds, args.idle_refresh_seconds))]
        (cpu, wall), (short_cpu, short_wall) = idle
        print(
            f"no change: server CPU {cpu * 1e3:.0f} ms over {wall:.1f} s idle at --refresh-seconds "
            f"{args.refresh_seconds} ({checks[0]:.0f} checks); {short_cpu * 1e3:.0f} ms over {short_wall:.1f} s at "
            f"--refresh-seconds {args.idle_refresh_seconds} ({checks[1]:.0f} checks): "
            f"{short_cpu * 1e3 / checks[1]:.2f} ms per check (an upper bound: the server's other idle work is in it), "
            f"{(short_cpu - cpu) * 1e3 / (checks[1] - checks[0]):.2f} ms from the difference "
            f"(CPU time counts in {1e3 / os.sysconf('SC_CLK_TCK'):.0f} ms ticks)"
        )
        print(shown(serve))
        print(
            f"server exit codes after SIGTERM: {code}, {idle_code}; load average {load()}; "
            f"whole run {time.monotonic() - begun:.0f} s"
        )


if __name__ == "__main__":
    main()
