"""Scale benchmark: the whole pipeline (import, snapshot, one epoch, serving) at several graph sizes.

For each size in ``--sizes`` the script runs, in a fresh scratch ``KGSERVER_HOME``
(SQLite store, no MLflow), exactly what a user types, each as its own process:

1. ``kgserver import FILES --graph NAME --json``: wall seconds (process start to
   exit), triples/s, and the process's peak RSS (``wait4`` rusage).
2. the training snapshot, built in a child Python process as ``kgserver train``
   builds it: ``Snapshot.from_store(store, NAME)`` plus its DGL message graph;
   seconds of each and the child's peak RSS (its RSS after importing torch and DGL
   is shown beside it).
3. ``kgserver train --graph NAME --model compgcn --epochs 1 --max-minutes M
   --no-tracking --json`` (``--mode auto``): the mode and the size-aware settings it
   chose (its ``size-aware default:`` lines), the epoch's training seconds and whether
   it completed (the JSON's ``epoch_seconds``, ``last_epoch_complete`` and
   ``last_epoch_fraction``), training triples/s over the part of the epoch that ran, and
   the whole epoch's seconds extrapolated when ``--max-minutes`` cut it, the process's peak RSS, and the
   size on disk of the bundle it saved under ``$KGSERVER_HOME/models/``.
4. ``kgserver serve --model BUNDLE --port 0 --poll-seconds 0``: seconds from start
   until it logs ready and health says SERVING, the RSS of the serve process and its children after the
   load, then PredictTails latency p50/p99 over ``--requests`` sequential
   single-query requests (k=10, after 20 unmeasured ones) through
   ``kgserver.client.KGClient``, on random heads and relations of the graph's
   vocabulary; then SIGTERM, which must end it with exit code 0.

Sizes: a folder of ``../shared/datasets`` with ``{train,valid,test}.tsv.gz``
(``codex-s``, ``fb15k-237``, ...; the split is taken from the file names), or
``synthetic-1m`` (1M triples, 100k entities) and ``synthetic-10m`` (10M triples,
1M entities), both 200 relations, seed 0, written by ``bench/synthetic.py`` into
``--work`` (reused when already there). Any step that fails ends the script with
its stderr tail. The last table holds each cost's growth against the first size's,
beside the growth in triples, so a reader sees whether cost grows linearly or less.

    .venv/bin/python bench/scale.py [--sizes codex-s,fb15k-237] [--train-minutes 30] [--work DIR]
    .venv/bin/python bench/scale.py --sizes codex-s,synthetic-1m,synthetic-10m --work /var/tmp/scale
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from harness import last_json, log_tail, percentile, run_measured, start_server, stop

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / ".." / "shared" / "datasets"
KGSERVER = str(Path(sys.executable).with_name("kgserver"))
SPLITS = ("train", "valid", "test")
SYNTHETIC = {"synthetic-1m": (1_000_000, 100_000), "synthetic-10m": (10_000_000, 1_000_000)}  # triples, entities
SYNTHETIC_RELATIONS = 200
SYNTHETIC_SEED = 0
WARM_UP_REQUESTS = 20
MIB = 2**20

SNAPSHOT_CHILD = """
import json, resource, sys, time
from kgserver.store import open_store
from kgserver.graph import Snapshot
import kgserver.graph.snapshot  # torch and DGL, loaded before the clock starts
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
with open_store() as store:
    snapshot = Snapshot.from_store(store, sys.argv[1])
read = time.perf_counter()
graph = snapshot.message_graph()
built = time.perf_counter()
print(json.dumps({
    "from_store_seconds": read - started, "message_graph_seconds": built - read,
    "baseline_rss_kib": baseline, "entities": snapshot.num_entities, "relations": snapshot.num_relations,
    "train": len(snapshot.train), "valid": len(snapshot.valid), "test": len(snapshot.test),
    "edges": graph.num_edges(),
}))
"""


@dataclass
class Row:
    """Every figure of one size."""

    size: str
    triples: int = 0
    entities: int = 0
    import_s: float = 0.0
    import_rss: float = 0.0
    snapshot_s: float = 0.0
    snapshot_rss: float = 0.0
    mode: str = ""
    epoch_s: float = 0.0
    epoch_completed: bool = False
    epoch_fraction: float = 0.0
    train_triples: int = 0
    train_rss: float = 0.0
    bundle_mib: float = 0.0
    ready_s: float = 0.0
    serve_rss: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    settings: list[str] = field(default_factory=list)

    def train_rate(self) -> float:
        """Training triples per second over the part of the epoch that ran."""
        return self.epoch_fraction * self.train_triples / self.epoch_s if self.epoch_s > 0 else 0.0

    def full_epoch_s(self) -> float:
        """The epoch's seconds, extrapolated from the part that ran when the budget cut it."""
        return self.epoch_s / self.epoch_fraction if self.epoch_fraction > 0 else float("inf")


def shown(command: list[str]) -> str:
    """A command as a user types it (``kgserver ...``, the interpreter as ``python``)."""
    names = {KGSERVER: "kgserver", sys.executable: "python"}
    return shlex.join([names.get(part, part) for part in command])


def dataset_files(size: str, work: Path, env: dict[str, str]) -> list[Path]:
    """The files to import for ``size``; synthetic ones are generated into ``work`` unless already there."""
    if size in SYNTHETIC:
        triples, entities = SYNTHETIC[size]
        target = work / size
        files = [target / f"{split}.nt.gz" for split in SPLITS]
        if all(path.exists() for path in files):
            print(f"{size}: reusing {target}", flush=True)
            return files
        partial = work / f"{size}.partial"  # renamed once complete, so an interrupted run is never reused
        shutil.rmtree(partial, ignore_errors=True)
        command = [
            sys.executable, str(REPO / "bench" / "synthetic.py"), "--triples", str(triples),
            "--entities", str(entities), "--relations", str(SYNTHETIC_RELATIONS),
            "--seed", str(SYNTHETIC_SEED), "--out", str(partial),
        ]  # fmt: skip
        made = run_measured(command, env, f"{size}: generating")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        summary = made.stdout.strip().splitlines()[0] if made.stdout.strip() else ""
        print(f"{size}: $ {shown(command)}\n  {summary}; {made.seconds:.1f} s", flush=True)
        return files
    folder = DATASETS / size
    return [folder / f"{split}.tsv.gz" for split in SPLITS]


def check_sizes(sizes: list[str]) -> None:
    for size in sizes:
        if size in SYNTHETIC:
            continue
        missing = [split for split in SPLITS if not (DATASETS / size / f"{split}.tsv.gz").exists()]
        if missing:
            raise SystemExit(
                f"unknown size {size!r}: not one of {', '.join(SYNTHETIC)} and {DATASETS.resolve() / size} "
                f"lacks {', '.join(f'{split}.tsv.gz' for split in missing)}"
            )


def directory_mib(path: Path) -> float:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) / MIB


def tree_rss_mib(pid: int) -> float:
    """RSS of a process and all its descendants."""
    parent = psutil.Process(pid)
    total = 0
    for process in [parent, *parent.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total / MIB


def serve(row: Row, bundle: Path, env: dict[str, str], home: Path, options: argparse.Namespace) -> None:
    """Start ``kgserver serve`` on the bundle, time its readiness, measure RSS and latency, stop it."""
    from kgserver.client import KGClient

    log_path = home / "serve.log"
    command = [KGSERVER, "serve", "--model", str(bundle), "--port", "0", "--poll-seconds", "0", *options.serve_arg]
    started = time.perf_counter()
    try:
        process, address = start_server(command, log_path, env=env, timeout=options.ready_timeout)
    except SystemExit as failure:
        raise SystemExit(f"{row.size}: $ {shown(command)}\n{failure}") from None
    try:
        row.ready_s = time.perf_counter() - started
        row.serve_rss = tree_rss_mib(process.pid)
        entities = (bundle / "entities.txt").read_text(encoding="utf-8").splitlines()
        relations = (bundle / "relations.txt").read_text(encoding="utf-8").splitlines()
        rng = random.Random(0)
        queries = [(rng.choice(entities), rng.choice(relations)) for _ in range(WARM_UP_REQUESTS + options.requests)]
        latencies: list[float] = []
        with KGClient(address) as client:
            for index, query in enumerate(queries):
                sent = time.perf_counter()
                answer = client.predict_tails([query], k=options.k)
                if index >= WARM_UP_REQUESTS:
                    latencies.append(time.perf_counter() - sent)
                if len(answer.results[0]) != min(options.k, len(entities)):
                    raise SystemExit(f"{row.size}: PredictTails answered {len(answer.results[0])} entities")
        row.serve_rss = max(row.serve_rss, tree_rss_mib(process.pid))
        row.p50_ms = percentile(latencies, 0.5) * 1e3
        row.p99_ms = percentile(latencies, 0.99) * 1e3
        code = stop(process, timeout=120)
        if code != 0:
            raise SystemExit(f"{row.size}: serve exited with code {code} after SIGTERM\n{log_tail(log_path)}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(
        f"  serve: $ {shown(command)}\n"
        f"    ready in {row.ready_s:.2f} s, RSS {row.serve_rss:.0f} MiB (serve process and children, the larger of "
        f"after ready and after the requests); PredictTails k={options.k}, {len(latencies)} sequential "
        f"single-query requests: p50 {row.p50_ms:.2f} ms, p99 {row.p99_ms:.2f} ms, max {max(latencies) * 1e3:.2f} "
        f"ms; SIGTERM -> exit code 0",
        flush=True,
    )


def measure_size(size: str, work: Path, options: argparse.Namespace) -> Row:
    row = Row(size)
    base_env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KGSERVER_DATABASE_URL", "MLFLOW_TRACKING_URI")  # the scratch home's SQLite store only
    }
    files = dataset_files(size, work, base_env)
    with tempfile.TemporaryDirectory(prefix=f"home-{size}-", dir=work) as scratch:
        home = Path(scratch)
        env = {**base_env, "KGSERVER_HOME": str(home)}
        print(f"{size}: KGSERVER_HOME={home}", flush=True)

        command = [KGSERVER, "import", *map(str, files), "--graph", size, "--json"]
        imported = run_measured(command, env, f"{size}: import")
        summary = last_json(imported.stdout, f"{size}: import")
        added = int(summary["added"])
        row.import_s, row.import_rss = imported.seconds, imported.peak_rss_mib
        print(
            f"  import: $ {shown(command)}\n"
            f"    {added:,} triples in {imported.seconds:.1f} s ({added / imported.seconds:,.0f} triples/s; "
            f"import's own {summary['seconds']} s), peak RSS {imported.peak_rss_mib:.0f} MiB",
            flush=True,
        )

        command = [sys.executable, "-c", SNAPSHOT_CHILD, size]
        snapped = run_measured(command, env, f"{size}: snapshot")
        shot = last_json(snapped.stdout, f"{size}: snapshot")
        from_store = float(shot["from_store_seconds"])
        message = float(shot["message_graph_seconds"])
        row.triples = sum(int(shot[split]) for split in SPLITS)
        row.entities = int(shot["entities"])
        row.train_triples = int(shot["train"])
        row.snapshot_s, row.snapshot_rss = from_store + message, snapped.peak_rss_mib
        print(
            f"  snapshot: Snapshot.from_store + message_graph() in a child process\n"
            f"    {row.entities:,} entities, {shot['relations']} relations, train/valid/test "
            f"{shot['train']:,}/{shot['valid']:,}/{shot['test']:,}, {shot['edges']:,} message edges; "
            f"from_store {from_store:.2f} s + message graph {message:.2f} s; peak RSS {snapped.peak_rss_mib:.0f} "
            f"MiB ({int(shot['baseline_rss_kib']) / 1024:.0f} MiB after importing torch and DGL)",
            flush=True,
        )

        command = [
            KGSERVER, "train", "--graph", size, "--model", options.model, "--epochs", "1",
            "--max-minutes", f"{options.train_minutes:g}", "--no-tracking", "--json", *options.train_arg,
        ]  # fmt: skip
        trained = run_measured(command, env, f"{size}: train")
        result = last_json(trained.stdout, f"{size}: train")
        row.epoch_s = float(result["epoch_seconds"][0])
        row.epoch_completed = bool(result["last_epoch_complete"])
        row.epoch_fraction = float(result["last_epoch_fraction"])
        row.mode = str(result["mode"])
        row.train_rss = trained.peak_rss_mib
        row.settings = re.findall(r"^size-aware default: (.*)$", trained.stderr, re.MULTILINE)
        bundle = Path(str(result["bundle_path"]))
        row.bundle_mib = directory_mib(bundle)
        rate = f"{row.train_rate():,.0f} training triples/s"
        if not row.epoch_completed:
            rate += (
                f" over the {row.epoch_fraction:.1%} of the epoch that ran; a whole one about "
                f"{row.full_epoch_s():.0f} s"
            )
        print(
            f"  train: $ {shown(command)}\n"
            f"    {row.mode}-graph training; " + "; ".join(row.settings or ["no size-aware choices"]) + "\n"
            f"    epoch {row.epoch_s:.1f} s ({rate}), stopped by {result['stop_reason']}; process "
            f"{trained.seconds:.1f} s in all (snapshot, evaluation, saving), peak RSS {trained.peak_rss_mib:.0f} MiB; "
            f"test MRR {float(result['test_mrr']):.4f}; bundle {row.bundle_mib:.1f} MiB",
            flush=True,
        )

        serve(row, bundle, env, home, options)
    return row


def ratio(value: float, base: float) -> float | None:
    return value / base if base > 0 else None


def growth_cell(value: float | None, base: float | None, triples_ratio: float) -> str:
    """``cost ratio x (cost ratio / triples ratio)``; "-" when either side is unknown."""
    if value is None or base is None or base <= 0:
        return "-"
    cost = value / base
    return f"{cost:.2f}x ({cost / triples_ratio:.2f})"


def print_tables(rows: list[Row]) -> None:
    print(
        "\n| size | triples | entities | import s | import peak RSS MiB | snapshot s | train mode | epoch s "
        "| train triples/s | train peak RSS MiB | bundle MiB | serve ready s | serve RSS MiB "
        "| PredictTails p50 ms | p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        epoch = f"{r.epoch_s:.1f}"
        if not r.epoch_completed:
            epoch = f"{r.full_epoch_s():.0f} (est.: {r.epoch_fraction:.1%} ran)"
        rate = f"{r.train_rate():,.0f}"
        print(
            f"| {r.size} | {r.triples:,} | {r.entities:,} | {r.import_s:.1f} | {r.import_rss:.0f} "
            f"| {r.snapshot_s:.2f} | {r.mode} | {epoch} | {rate} | {r.train_rss:.0f} | {r.bundle_mib:.1f} "
            f"| {r.ready_s:.1f} | {r.serve_rss:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} |"
        )
    first = rows[0]
    print(
        f"\ngrowth against {first.size}: each cost's ratio, and in parentheses that ratio over the triples "
        "ratio (1.00: linear; above 1: faster than linear)"
    )
    print(
        "| size | triples x | import s | epoch s | import peak RSS | snapshot peak RSS | train peak RSS "
        "| serve RSS | bundle |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        grown = r.triples / first.triples
        cells = [
            growth_cell(r.import_s, first.import_s, grown),
            growth_cell(r.full_epoch_s(), first.full_epoch_s(), grown) + ("" if r.epoch_completed else " est."),
            growth_cell(r.import_rss, first.import_rss, grown),
            growth_cell(r.snapshot_rss, first.snapshot_rss, grown),
            growth_cell(r.train_rss, first.train_rss, grown),
            growth_cell(r.serve_rss, first.serve_rss, grown),
            growth_cell(r.bundle_mib, first.bundle_mib, grown),
        ]
        print(f"| {r.size} | {grown:.2f} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes",
        default="codex-s,fb15k-237",
        help=f"comma list: folders of ../shared/datasets with TSV splits, or {', '.join(SYNTHETIC)}",
    )
    parser.add_argument(
        "--work", type=Path, help="directory for generated graphs (reused) and scratch homes (default: a temp dir)"
    )
    parser.add_argument("--train-minutes", type=float, default=30.0, help="`kgserver train --max-minutes` budget")
    parser.add_argument("--model", default="compgcn", help="plugin to train")
    parser.add_argument("--requests", type=int, default=500, help="measured PredictTails requests per size")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ready-timeout", type=float, default=1800.0, help="seconds serve may take to get ready")
    parser.add_argument("--train-arg", action="append", default=[], help="extra `kgserver train` option (repeatable)")
    parser.add_argument("--serve-arg", action="append", default=[], help="extra `kgserver serve` option (repeatable)")
    options = parser.parse_args()
    sizes = [size for size in options.sizes.split(",") if size]
    if not sizes:
        raise SystemExit("--sizes names no size")
    if options.requests < 1:
        raise SystemExit("--requests must be at least 1")
    check_sizes(sizes)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.1f} GiB, load average {load}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="kgserver-scale-") as scratch:
        work = options.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure_size(size, work, options) for size in sizes]
    print_tables(rows)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    extra = "".join(f" --train-arg={item}" for item in options.train_arg) + "".join(
        f" --serve-arg={item}" for item in options.serve_arg
    )
    work_option = f" --work {options.work}" if options.work else ""
    print(
        f"command: bench/scale.py --sizes {','.join(sizes)} --train-minutes {options.train_minutes:g} "
        f"--model {options.model} --requests {options.requests} --k {options.k}{work_option}{extra}"
    )


if __name__ == "__main__":
    main()
