"""The data commands as users run them: import, graphs, graphs delete, db upgrade."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgserver.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "codex-s"
KGSERVER = str(Path(sys.executable).with_name("kgserver"))


def kgserver(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (so error translation and exit codes are real)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KGSERVER_")}
    environment.update(env or {})
    return subprocess.run([KGSERVER, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300)


def unwrap(text: str) -> str:
    """Undo the terminal-width line wrapping of rich output."""
    return text.replace("\n", "")


@pytest.mark.parametrize(
    ("command", "phrases"),
    [
        (["import"], ["all or nothing", "train, valid or test", "--base", "--split", ".jsonld", "--json"]),
        (["graphs"], ["entity, relation and triple counts per split", "--json", "graphs delete NAME"]),
        (["graphs", "delete"], ["no", "other graph uses"]),
        (["db"], ["upgrade"]),
        (["db", "upgrade"], ["Alembic", "PostgreSQL", "--db"]),
    ],
)
def test_help_explains_each_command(command: list[str], phrases: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} missing from {command} --help:\n{result.output}"


def run(*args: str) -> str:
    """Run a command in-process (CliRunner) and return its output; it must succeed."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, f"{args}: {result.output}{result.exception!r}"
    return result.output


def test_import_graphs_delete_round_trip(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'store.db'}"
    files = [str(path) for path in sorted(EXAMPLES.glob("*.gz"))]

    summary = json.loads(run("import", *files, "--graph", "codex", "--db", db, "--json"))
    assert {"graph", "added", "skipped_duplicates", "seconds", "files"} <= summary.keys()
    assert (summary["graph"], summary["added"], summary["skipped_duplicates"]) == ("codex", 36585, 0)
    assert {f["split"] for f in summary["files"]} == {"train", "valid", "test", None}

    again = run("import", *files, "--graph", "codex", "--db", db)
    assert again.count("\n") == 1 and "nothing new" in again
    assert "skipped_duplicates=36,585" in again

    (graph,) = json.loads(run("graphs", "--db", db, "--json"))
    assert (graph["name"], graph["entities"], graph["relations"]) == ("codex", 2034, 42)
    assert graph["triples"] == {"train": 32888, "valid": 1827, "test": 1828, "none": 0, "total": 36543}
    assert graph["literal_triples"] == 42

    table = run("graphs", "--db", db)
    assert "codex" in table and "32,888" in table and "2,034" in table

    assert "36,585 triples" in run("graphs", "delete", "codex", "--db", db)
    missing = kgserver("graphs", "delete", "codex", "--db", db)  # the real exit code and message
    assert missing.returncode == 1 and "graph 'codex' does not exist" in unwrap(missing.stderr)
    assert "no graphs" in run("graphs", "--db", db)


def test_malformed_file_exits_nonzero_naming_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.nt"
    bad.write_text("<http://a> <http://b> <http://c> .\n<http://a> <http://b> .\n")
    db = f"sqlite:///{tmp_path / 'store.db'}"
    result = kgserver("import", str(bad), "--graph", "g", "--db", db, cwd=tmp_path)  # any cwd
    assert result.returncode == 1
    assert f"{bad}:2:" in unwrap(result.stderr)
    assert "no graphs" in run("graphs", "--db", db)


def test_default_store_lives_under_kgserver_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "train.tsv"
    data.write_text("a\tp\tb\n")
    monkeypatch.delenv("KGSERVER_DATABASE_URL", raising=False)
    monkeypatch.delenv("KGSERVER_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    run("import", str(data), "--graph", "g")
    assert (tmp_path / ".kgserver" / "kgserver.db").is_file()
    monkeypatch.setenv("KGSERVER_HOME", str(tmp_path / "elsewhere"))
    run("import", str(data), "--graph", "g")
    assert (tmp_path / "elsewhere" / "kgserver.db").is_file()


def test_postgresql_behind_and_db_upgrade(empty_postgres_url: str) -> None:
    behind = kgserver("graphs", "--db", empty_postgres_url)
    # The CLI's error printer wraps long lines; the message is what matters.
    assert behind.returncode == 1 and "run `kgserver db upgrade --db" in unwrap(behind.stderr)
    assert "schema revision" in run("db", "upgrade", "--db", empty_postgres_url)
    assert "no graphs" in run("graphs", "--db", empty_postgres_url)


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """On a TTY the import shows a rich progress bar with triples per second."""
    controller, terminal = pty.openpty()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KGSERVER_")}
    environment.update(COLUMNS="160", TERM="xterm")
    process = subprocess.Popen(
        [
            KGSERVER,
            "import",
            str(EXAMPLES / "valid.nt.gz"),
            "--graph",
            "g",
            "--db",
            f"sqlite:///{tmp_path / 'store.db'}",
        ],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=environment,
        close_fds=True,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0
    text = output.decode("utf-8", "replace")
    assert "valid.nt.gz" in text and "triples/s" in text and "1,827" in text
