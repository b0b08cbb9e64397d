"""Partition benchmark: ``kgserver partition`` on a dataset, by method and part count.

Imports the dataset's TSV splits (read from ``../shared/datasets/<name>``) into a scratch
``KGSERVER_HOME`` (or uses the graph already in ``--home``), then runs, for every method
and part count, exactly what a user runs::

    kgserver partition --graph NAME --parts N --method METHOD --out DIR --json

and prints each run's wall and CPU seconds and peak RSS (the process, measured from
outside; CPU seconds hold on a shared machine, wall seconds do not) and
its cut: the message edges whose two ends lie in different parts, each a remote fetch when
a distributed sampler crosses it. METIS should cut far fewer than random assignment.

    .venv/bin/python bench/partition.py --dataset fb15k-237 --parts 2,4,8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from harness import last_json, run_measured

from kgserver.graph.partition import METHODS

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / ".." / "shared" / "datasets"
KGSERVER = str(Path(sys.executable).with_name("kgserver"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="fb15k-237", help="a folder of ../shared/datasets with *.tsv.gz splits")
    parser.add_argument("--parts", default="2,4,8", help="comma-separated part counts")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--home", type=Path, help="a KGSERVER_HOME that already holds the graph (default: import)")
    args = parser.parse_args()
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.node()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="kgserver-partition-") as scratch:
        home = args.home or Path(scratch) / "home"
        env = {**os.environ, "KGSERVER_HOME": str(home)}
        env.pop("KGSERVER_DATABASE_URL", None)
        if args.home is None:
            files = sorted(str(path) for path in (DATASETS / args.dataset).glob("*.tsv.gz"))
            imported = run_measured([KGSERVER, "import", *files, "--graph", args.dataset, "--json"], env, "import")
            print(f"imported {last_json(imported.stdout, 'import')['added']:,} triples in {imported.seconds:.1f} s")
        print("| method | parts | wall s | CPU s | peak RSS MiB | message edges | cut edges | cut |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for method in args.methods.split(","):
            for parts in (int(part) for part in args.parts.split(",")):
                out = Path(scratch) / f"{method}-{parts}"
                command = [KGSERVER, "partition", "--graph", args.dataset, "--parts", str(parts),
                           "--method", method, "--out", str(out), "--json"]  # fmt: skip
                run = run_measured(command, env, f"partition {method} {parts}")
                summary = last_json(run.stdout, "partition")
                print(
                    f"| {method} | {parts} | {run.seconds:.1f} | {run.cpu_seconds:.1f} | {run.peak_rss_mib:,.0f} "
                    f"| {summary['message_edges']:,} | {summary['cut_edges']:,} "
                    f"| {summary['cut_edges'] / summary['message_edges']:.1%} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
