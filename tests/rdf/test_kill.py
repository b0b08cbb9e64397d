"""SIGKILL in the middle of a large import leaves the store as it was; re-running completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kgserver.rdf import import_files
from kgserver.store import Store, open_store

FB15K_TRAIN = 272_115

# Imports FB15k-237's training split, printing the triples read after every batch
# (all but the last two batches are written inside the still-open transaction).
IMPORTER = """
import sys
from kgserver.rdf import import_files
from kgserver.store import open_store

def report(path, done, size, triples):
    print(triples, flush=True)

with open_store(sys.argv[1]) as store:
    import_files(store, [sys.argv[2]], "fb15k-237", split="train", on_progress=report)
print("committed", flush=True)
"""


def test_sigkill_mid_import_leaves_store_unchanged(
    db_url: str, shared_data: Path, tmp_path: Path, table_counts: Callable[[Store], dict[str, int]]
) -> None:
    train = shared_data / "datasets" / "fb15k-237" / "train.tsv.gz"
    small = tmp_path / "valid.nt"
    small.write_text("<http://example.org/a> <http://example.org/p> <http://example.org/b> .\n")
    with open_store(db_url) as store:
        import_files(store, [small], "existing")
        before = table_counts(store)

    process = subprocess.Popen(
        [sys.executable, "-c", IMPORTER, db_url, str(train)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    killed_at = None
    for line in process.stdout:
        if line.strip() == "committed":
            break
        if int(line) >= 100_000:
            os.kill(process.pid, signal.SIGKILL)
            killed_at = int(line)
            break
    process.wait(timeout=60)
    assert killed_at is not None, "the import finished before it could be killed"
    assert process.returncode == -signal.SIGKILL

    with open_store(db_url) as store:
        assert table_counts(store) == before
        assert [info.name for info in store.graphs()] == ["existing"]
        summary = import_files(store, [train], "fb15k-237", split="train")
        assert summary.added == FB15K_TRAIN
        info = {info.name: info for info in store.graphs()}
        assert info["fb15k-237"].triples["train"] == FB15K_TRAIN
        assert info["existing"].triples["valid"] == 1
