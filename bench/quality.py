"""Quality benchmark: each plugin's defaults trained by ``kgserver train --json`` on a benchmark.

Imports the dataset's TSV splits (read from ``../shared/datasets/<name>``) into a
scratch ``KGSERVER_HOME``, then runs, for every plugin, exactly what a user runs::

    kgserver train --graph NAME --model PLUGIN --epochs 1000 --max-minutes M --json --mode MODE [--threads T]

with the plugin's default hyperparameters and kgserver's size-aware choices,
``--parallel`` trainings at a time (two one-thread trainings use the two cores of
the reference machine), and prints each run's filtered test metrics beside the
quality targets (:data:`TARGETS`). ``--modes full,sampled`` trains each plugin in
both training modes (``kgserver train --mode``) under the same budget: sampled
quality at the wall clock that 1-N training gets.

    .venv/bin/python bench/quality.py --dataset codex-s --max-minutes 28 --threads 1 --parallel 2
    .venv/bin/python bench/quality.py --dataset fb15k-237 --models compgcn --max-minutes 60 --parallel 1
    .venv/bin/python bench/quality.py --dataset fb15k-237 --models compgcn --modes full,sampled --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import tail

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / ".." / "shared" / "datasets"
KGSERVER = Path(sys.executable).parent / "kgserver"
PLUGINS = ("rgcn", "compgcn", "gatv2")
# test MRR each plugin's defaults must reach: CoDEx-S's within 30 minutes, the larger graphs' within 60
TARGETS = {
    "codex-s": {"compgcn": 0.45, "gatv2": 0.43, "rgcn": 0.38},
    "fb15k-237": {"compgcn": 0.33},
    "codex-m": {"compgcn": 0.32},
    "wn18rr": {"compgcn": 0.44},
}


def kgserver(home: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KGSERVER), *args],
        env={**os.environ, "KGSERVER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str], what: str) -> str:
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{what} failed ({process.returncode}):\n{tail(err)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="codex-s", help="a folder of ../shared/datasets with *.tsv.gz splits")
    parser.add_argument("--models", default=",".join(PLUGINS))
    parser.add_argument("--max-minutes", type=float, default=28.0, help="time budget of each training")
    parser.add_argument(
        "--threads", type=int, help="torch threads per training (default: what kgserver train chooses)"
    )
    parser.add_argument("--parallel", type=int, default=2, help="trainings at a time")
    parser.add_argument(
        "--modes", default="auto", help="training modes to run each plugin in (kgserver train --mode), comma-separated"
    )
    parser.add_argument("--home", type=Path, help="KGSERVER_HOME to use (default: a scratch directory)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE",
        help="a hyperparameter passed to every training as `kgserver train --set` (repeatable)",
    )  # fmt: skip
    args = parser.parse_args()
    print(f"$ {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.node()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="kgserver-quality-") as scratch:
        home = args.home or Path(scratch)
        files = sorted(str(path) for path in (DATASETS / args.dataset).glob("*.tsv.gz"))
        print(finish(kgserver(home, "import", *files, "--graph", args.dataset), "import").strip(), flush=True)
        modes = [mode for mode in args.modes.split(",") if mode]
        queue = [(name, mode) for name in args.models.split(",") if name for mode in modes]
        running: list[tuple[str, list[str], float, subprocess.Popen[str]]] = []
        results = []
        while queue or running:
            while queue and len(running) < args.parallel:
                name, mode = queue.pop(0)
                command = ["train", "--graph", args.dataset, "--model", name, "--epochs", "1000",
                           "--max-minutes", f"{args.max_minutes:g}", "--json", "--mode", mode,
                           *(["--threads", str(args.threads)] if args.threads else []),
                           *(f"--set={item}" for item in args.set)]  # fmt: skip
                running.append((name, command, time.monotonic(), kgserver(home, *command)))
                time.sleep(1)  # distinct MLflow run start times, tidier logs
            name, command, started, process = running.pop(0)
            summary = json.loads(finish(process, f"training {name}").strip().splitlines()[-1])
            summary["wall_minutes"] = (time.monotonic() - started) / 60
            results.append((name, command, summary))
            print(f"$ kgserver {' '.join(command)}\n{json.dumps(summary)}", flush=True)
    settings = "default hyperparameters" + "".join(f", {item}" for item in args.set)
    threads = f"{args.threads} thread(s)" if args.threads else "kgserver's choice of threads"
    print(
        f"\n{args.dataset}, {settings}, {threads} per training, "
        f"{args.parallel} at a time, at most {args.max_minutes:g} minutes each"
    )
    targets = TARGETS.get(args.dataset, {})
    print(
        "| plugin | mode | epochs (best) | stopped by | minutes | test MRR | Hits@1 | Hits@3 | Hits@10 | valid MRR "
        "| target |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for name, _, m in results:
        target = targets.get(name)
        print(
            f"| {name} | {m['mode']} | {m['epochs']:.0f} ({m['best_epoch']}) | {m['stop_reason']} "
            f"| {m['wall_minutes']:.1f} "
            f"| {m['test_mrr']:.4f} | {m['test_hits_at_1']:.4f} | {m['test_hits_at_3']:.4f} "
            f"| {m['test_hits_at_10']:.4f} | {m['valid_mrr']:.4f} |"
            + (f" >= {target} {'met' if m['test_mrr'] >= target else 'NOT met'} |" if target else " - |")
        )


if __name__ == "__main__":
    main()
