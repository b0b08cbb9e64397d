"""Several processes opening a new embedded MLflow store at the same moment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

OPEN_STORE = "from kgserver.tracking.backend import connect; connect(sys.argv[1]); print('ok')"


def test_processes_starting_together_on_a_fresh_store_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", f"import sys; {OPEN_STORE}", uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [process.communicate(timeout=180) + (process.returncode,) for process in starts]
    for out, err, code in results:
        assert code == 0 and out.strip() == "ok", err[-2000:]
