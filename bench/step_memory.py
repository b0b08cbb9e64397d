"""Memory and time of full-graph 1-N training steps, under each way of handing memory back.

A full-graph step allocates and frees gigabytes of tensors (scores against every
entity, their gradients, the encoder's activations). Training keeps freed memory
in the process (:func:`kgserver.training.runtime.retain_freed_memory`), so a step
reuses pages that are already mapped instead of faulting fresh ones in. This
benchmark measures what that costs in resident memory, beside the size-aware
defaults' estimate of a step (:mod:`kgserver.training.mode`), for four allocator
settings, each in a process of its own (a peak RSS is per process):

- ``plain``: glibc's defaults (blocks above its mmap threshold are fresh mappings);
- ``retained``: what ``kgserver train`` does;
- ``hugepages``: glibc's defaults with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``
  (its mappings ask for transparent huge pages: fewer, larger page faults);
- ``trimmed``: retained, and after each step whose resident size passed the
  estimate, ``malloc_trim(0)`` hands the free pages back (a bound on the heap
  that keeps reuse while under it).

Each runs ``--steps`` steps of compgcn at dimension 512 on one dataset and batch
size, one thread, and prints per step its seconds, the process's peak RSS and
its page faults so far.

    .venv/bin/python bench/step_memory.py --dataset wn18rr --batch-size 4096 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime

from train import read_splits

SETTINGS = {
    "plain": {},
    "retained": {},
    "hugepages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
    "trimmed": {},
}


def worker(args: argparse.Namespace) -> None:
    """Run the steps in this process and print one JSON line per step."""
    import ctypes

    import psutil
    import torch

    from kgserver.graph import Snapshot
    from kgserver.registry import get_model
    from kgserver.training.full import FullGraphOneToN
    from kgserver.training.losses import Objective
    from kgserver.training.mode import full_graph_bytes, parameter_bytes, score_bytes
    from kgserver.training.runtime import retain_freed_memory, seed_everything

    if args.worker in ("retained", "trimmed"):
        retain_freed_memory()
    torch.set_num_threads(1)
    entities, relations, ids = read_splits(args.dataset)
    snapshot = Snapshot(
        args.dataset, entities, relations, *(torch.tensor(ids[split]) for split in ("train", "valid", "test"))
    )
    seed_everything(0)
    cls = get_model("compgcn")
    hparams = cls.hyperparameters.parse_assignments([f"batch_size={args.batch_size}", "embedding_dim=512"])
    model = cls(snapshot.num_entities, snapshot.num_relations, hparams)
    graph = snapshot.message_graph()
    objective = Objective(hparams.loss, hparams.label_smoothing, model.num_entities)
    source = FullGraphOneToN(
        model, graph, snapshot.train, batch_size=args.batch_size, objective=objective,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.learning_rate)
    estimate = (
        full_graph_bytes(graph.num_edges(), snapshot.num_entities, 512, hparams.num_layers)
        + score_bytes(args.batch_size, snapshot.num_entities)
        + parameter_bytes(snapshot.num_entities, snapshot.num_relations, 512)
    )
    process, libc = psutil.Process(), ctypes.CDLL("libc.so.6")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for index, step in enumerate(source.batches()):
        if index == args.steps:
            break
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        assert step.loss is not None
        step.loss().backward()
        optimizer.step()
        if args.worker == "trimmed" and process.memory_info().rss > estimate:
            libc.malloc_trim(0)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({
            "step": index, "seconds": time.perf_counter() - started, "peak_rss": usage.ru_maxrss * 1024,
            "faults": usage.ru_minflt, "estimate": estimate, "before_steps": before,
        }), flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="wn18rr", help="a folder of ../shared/datasets with *.tsv.gz splits")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--settings", default=",".join(SETTINGS), help="allocator settings to run, comma-separated")
    parser.add_argument("--worker", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    print(f"$ {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.node()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    gib = 2**30
    print("| allocator | step | seconds | peak RSS GiB | page faults so far | RSS before GiB | estimate GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.settings.split(","):
        command = [sys.executable, __file__, "--dataset", args.dataset, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--worker", name]  # fmt: skip
        done = subprocess.run(
            command, env={**os.environ, **SETTINGS[name]}, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        for line in done.stdout.splitlines():
            row = json.loads(line)
            print(
                f"| {name} | {row['step']} | {row['seconds']:.1f} | {row['peak_rss'] / gib:.2f} "
                f"| {row['faults']:,} | {row['before_steps'] / gib:.2f} | {row['estimate'] / gib:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
