"""Import benchmark: FB15k-237 as N-Triples into SQLite and PostgreSQL, against rdflib.

    .venv/bin/python bench/import.py [--datasets DIR] [--postgres URL] [--no-postgres]

1. Converts FB15k-237 (train + valid + test, 310,116 lines) to one N-Triples file
   with Freebase IRIs (``/m/027rn`` -> ``http://rdf.freebase.com/ns/m.027rn``,
   relation paths likewise: ``/film/film/genre`` -> ``.../ns/film.film.genre``) in
   a temporary directory.
2. Runs ``kgserver import`` on it as a separate process into a fresh SQLite file,
   then again (idempotent re-import), then into a fresh PostgreSQL database (created
   here, upgraded with ``kgserver db upgrade``, dropped at the end).
3. Times rdflib's plain ``Graph().parse()`` of the same file, also as a process.

Each process is measured from the outside: wall time (interpreter start to exit,
i.e. end to end), CPU time, and peak resident memory (``wait4`` rusage). The
import's own ``seconds`` from ``--json`` (file open to commit) is shown too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from pathlib import Path

from harness import Measured, run_measured

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO / ".." / "shared" / "datasets" / "fb15k-237"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FREEBASE = "http://rdf.freebase.com/ns/"
KGSERVER = str(Path(sys.executable).with_name("kgserver"))

RDFLIB_PARSE = "import sys, rdflib; g = rdflib.Graph(); g.parse(sys.argv[1], format='nt'); print(len(g))"


def freebase_iri(path: str) -> str:
    """``/m/027rn`` -> ``http://rdf.freebase.com/ns/m.027rn`` (Freebase's RDF naming)."""
    return FREEBASE + path.strip("/").replace("/", ".")


def convert(datasets: Path, target: Path) -> int:
    """Write every split of FB15k-237 to ``target`` as N-Triples; returns the line count."""
    count = 0
    with target.open("w", encoding="utf-8") as out:
        for split in ("train", "valid", "test"):
            with gzip.open(datasets / f"{split}.tsv.gz", "rt", encoding="utf-8") as lines:
                for line in lines:
                    head, relation, tail = line.rstrip("\n").split("\t")
                    out.write(f"<{freebase_iri(head)}> <{freebase_iri(relation)}> <{freebase_iri(tail)}> .\n")
                    count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS, help="FB15k-237 directory")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="maintenance URL of the PostgreSQL server")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite and rdflib only")
    parser.add_argument("--rounds", type=int, default=3, help="repeat every measurement this many times")
    args = parser.parse_args()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; load average before: {_load()}")

    results: dict[str, list[tuple[Measured, dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="kgserver-bench-") as scratch:
        directory = Path(scratch)
        source = directory / "fb15k-237.nt"
        started = time.perf_counter()
        triples = convert(args.datasets.resolve(), source)
        print(
            f"FB15k-237 -> N-Triples: {triples:,} triples, {source.stat().st_size / 1e6:.1f} MB "
            f"(converted in {time.perf_counter() - started:.1f} s)"
        )
        for round_number in range(args.rounds):
            sqlite_url = f"sqlite:///{directory / f'store-{round_number}.db'}"
            results.setdefault(SQLITE_FRESH, []).append(_import(source, sqlite_url))
            results.setdefault(SQLITE_AGAIN, []).append(_import(source, sqlite_url))
            if not args.no_postgres:
                results.setdefault(POSTGRES_FRESH, []).append(_postgres_import(source, args.postgres))
            parsed = run([sys.executable, "-c", RDFLIB_PARSE, str(source)])
            if int(parsed.stdout.strip()) != triples:
                raise SystemExit(f"rdflib read {parsed.stdout.strip()} triples, expected {triples}")
            results.setdefault(RDFLIB, []).append((parsed, {}))

    print(f"load average after: {_load()} (other processes share these CPUs)")
    print(f"{args.rounds} rounds; best (shortest) of each, then every round's end-to-end time:")
    for label, runs in results.items():
        best = min(runs, key=lambda run_: run_[0].seconds)[0]
        line = (
            f"{label:38} {best.seconds:6.2f} s end to end = {triples / best.seconds:9,.0f} triples/s; "
            f"CPU {min(m.cpu_seconds for m, _ in runs):5.2f} s; "
            f"peak RSS {max(m.peak_rss_mib for m, _ in runs):5.0f} MiB"
        )
        summaries = [summary for _, summary in runs if summary]
        if summaries:
            phase = min(summary["seconds"] for summary in summaries)
            line += (
                f"; import phase {phase:5.2f} s = {triples / phase:9,.0f} triples/s"
                f"; added {summaries[0]['added']:,}, skipped {summaries[0]['skipped_duplicates']:,}"
            )
        print(line + f"  [{', '.join(f'{m.seconds:.2f}' for m, _ in runs)}]")
    ratios = [
        rdflib[0].seconds / fresh[0].seconds for rdflib, fresh in zip(results[RDFLIB], results[SQLITE_FRESH])
    ]
    cpu_ratios = [
        rdflib[0].cpu_seconds / fresh[0].cpu_seconds for rdflib, fresh in zip(results[RDFLIB], results[SQLITE_FRESH])
    ]
    print(
        f"rdflib Graph().parse() alone / whole kgserver import into SQLite, same round: "
        f"wall {', '.join(f'{r:.1f}x' for r in ratios)}; CPU {', '.join(f'{r:.1f}x' for r in cpu_ratios)}"
    )


SQLITE_FRESH = "kgserver import -> SQLite (fresh)"
SQLITE_AGAIN = "kgserver import -> SQLite (again, +0)"
POSTGRES_FRESH = "kgserver import -> PostgreSQL (fresh)"
RDFLIB = "rdflib Graph().parse(format='nt')"


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run(command: list[str]) -> Measured:
    """Run ``command``; wall time, CPU time and peak RSS of that process alone (wait4)."""
    return run_measured(command, dict(os.environ), Path(command[0]).name)


def _import(source: Path, url: str) -> tuple[Measured, dict]:
    measured = run([KGSERVER, "import", str(source), "--graph", "fb15k-237", "--db", url, "--json"])
    return measured, json.loads(measured.stdout)


def _postgres_import(source: Path, maintenance_url: str) -> tuple[Measured, dict]:
    """Import into a new PostgreSQL database, created and upgraded first, dropped after."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(maintenance_url)
    name = f"kgserver_bench_{uuid.uuid4().hex[:8]}"
    connect = dict(host=server.host, port=server.port or 5432, user=server.username,
                   password=server.password, dbname=server.database, autocommit=True)
    with psycopg.connect(**connect) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        run([KGSERVER, "db", "upgrade", "--db", url])
        return _import(source, url)
    finally:
        with psycopg.connect(**connect) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
