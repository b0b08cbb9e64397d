"""kgserver.graph's torch-only parts load without DGL; snapshot.py depends on from_store.py, not back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import kgserver.graph


def test_evaluation_and_the_served_model_do_not_load_dgl() -> None:
    code = (
        "import sys\n"
        "import kgserver.evaluation, kgserver.serving.served\n"
        "from kgserver.graph import TripleIndex, Vocabulary\n"
        "assert 'dgl' not in sys.modules, 'dgl was imported'\n"
        "from kgserver.graph import Snapshot\n"
        "assert 'dgl' in sys.modules and Snapshot.__name__ == 'Snapshot'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr


def test_from_store_does_not_import_snapshot() -> None:
    source = Path(kgserver.graph.__file__).parent / "from_store.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom)
    }
    assert "kgserver.graph.snapshot" not in imported and "kgserver.graph" not in imported
