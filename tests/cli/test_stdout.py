"""stdout holds exactly the command's result on a machine where DGL never ran.

DGL prints a backend notice to stdout on its first import when ``~/.dgl`` does
not exist and ``DGLBACKEND`` is unset; a ``--json`` consumer would then fail to
parse. Each command runs in a fresh process with an empty ``HOME``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

KGSERVER = str(Path(sys.executable).parent / "kgserver")
EX = "http://example.org/"


def fresh_kgserver(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in {"DGLBACKEND", "MLFLOW_TRACKING_URI"}}
    env.pop("KGSERVER_DATABASE_URL", None)
    env.update(HOME=str(home), KGSERVER_HOME=str(home / "kg"), OMP_NUM_THREADS="1")
    return subprocess.run([KGSERVER, *args], capture_output=True, text=True, env=env, timeout=600)


def test_json_commands_print_one_document_with_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rows = [(f"e{i}", f"r{i % 2}", f"e{(i * 7 + 3) % 20}") for i in range(60)]
    data = tmp_path / "toy.tsv"
    data.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in rows), encoding="utf-8")
    imported = fresh_kgserver("import", str(data), "--graph", "toy", "--base", EX, "--json", home=home)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["graph"] == "toy"
    graphs = fresh_kgserver("graphs", "--json", home=home)
    assert graphs.returncode == 0, graphs.stderr
    assert [graph["name"] for graph in json.loads(graphs.stdout)] == ["toy"]
    trained = fresh_kgserver(
        "train", "--graph", "toy", "--model", "compgcn", "--epochs", "2", "--eval-every", "1",
        "--threads", "1", "--set", "embedding_dim=16", "--set", "decoder=distmult", "--json", home=home,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["registered_version"] == "toy-compgcn/1"
    listed = fresh_kgserver("models", "list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    assert "toy-compgcn" in json.dumps(json.loads(listed.stdout))
    assert not (home / ".dgl").exists()
