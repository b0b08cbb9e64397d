"""Stores that cannot be opened or stay locked: one clear line and a fixed exit code, per command.

The commands run through ``kgserver.cli.main`` in-process (an exception escaping it
would be a user's traceback and fails the test); one case runs the console script.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from hostile.helpers import KGSERVER
from hostile.helpers import cli_in_process as kgserver
from kgserver.rdf import import_files
from kgserver.store import open_store
from kgserver.store.engine import PG_WRITE_LOCK

REFUSED = "postgresql+psycopg://postgres:secret@127.0.0.1:9/x"
NO_SUCH_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/kgserver_no_such_database"


def assert_one_line_error(result: subprocess.CompletedProcess[str], exit_code: int, *phrases: str) -> str:
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], f"{phrase!r} missing from {lines[0]!r}"
    return lines[0]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.nt"
    path.write_text("<http://example.org/a> <http://example.org/p> <http://example.org/b> .\n")
    return path


def store_commands(data: Path) -> dict[str, list[str]]:
    """Every data command that opens the store, without its --db."""
    return {
        "graphs": ["graphs"],
        "import": ["import", str(data), "--graph", "g"],
        "graphs delete": ["graphs", "delete", "g"],
        "db upgrade": ["db", "upgrade"],
        "train": ["train", "--graph", "g", "--model", "rgcn", "--no-tracking", "--epochs", "1"],
    }


@pytest.mark.parametrize("command", ["graphs", "import", "graphs delete", "db upgrade", "train"])
def test_unreachable_postgresql(command: str, data: Path, tmp_path: Path) -> None:
    result = kgserver(*store_commands(data)[command], "--db", REFUSED, home=tmp_path / "home")
    line = assert_one_line_error(
        result, 1, "cannot open the store postgresql+psycopg://postgres:***@127.0.0.1:9/x", "Connection refused"
    )
    assert "secret" not in line


@pytest.mark.parametrize("command", ["graphs", "import", "db upgrade"])
def test_missing_postgresql_database(command: str, data: Path, tmp_path: Path) -> None:
    result = kgserver(*store_commands(data)[command], "--db", NO_SUCH_DATABASE, home=tmp_path / "home")
    assert_one_line_error(
        result, 1, f"cannot open the store {NO_SUCH_DATABASE}", 'database "kgserver_no_such_database" does not exist'
    )


@pytest.mark.parametrize("command", ["graphs", "import", "db upgrade", "train"])
def test_sqlite_directory_that_cannot_be_created(command: str, data: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker / 'sub' / 'store.db'}"
    result = kgserver(*store_commands(data)[command], "--db", url, home=tmp_path / "home")
    assert_one_line_error(result, 1, f"cannot open the store {url}", f"cannot create the directory {blocker / 'sub'}")


@pytest.mark.parametrize("command", ["graphs", "import", "db upgrade"])
def test_sqlite_file_that_is_not_a_database(command: str, data: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{data}"  # an N-Triples file
    result = kgserver(*store_commands(data)[command], "--db", url, home=tmp_path / "home")
    assert_one_line_error(result, 1, f"cannot open the store {url}", "file is not a database")


def test_the_console_script_prints_no_traceback(data: Path, tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KGSERVER_")}
    result = subprocess.run(
        [KGSERVER, "graphs", "--db", REFUSED], capture_output=True, text=True, env=environment,
        timeout=120, check=False,
    )
    assert_one_line_error(result, 1, "cannot open the store", "Connection refused")


@pytest.fixture()
def sqlite_store(tmp_path: Path, data: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as store:
        import_files(store, [data], "g")
    return url


@pytest.fixture()
def sqlite_writer(sqlite_store: str) -> Iterator[str]:
    """Another process's write lock on the store, for the duration of the test."""
    connection = sqlite3.connect(sqlite_store.removeprefix("sqlite:///"), isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield sqlite_store
    finally:
        connection.execute("ROLLBACK")
        connection.close()


@pytest.mark.parametrize(
    ("command", "action"),
    [(["import"], "importing into graph 'g2'"), (["graphs", "delete", "g"], "deleting graph 'g'")],
)
def test_a_locked_sqlite_store_fails_after_the_lock_timeout(
    sqlite_writer: str, data: Path, tmp_path: Path, command: list[str], action: str
) -> None:
    args = [*command, str(data), "--graph", "g2"] if command == ["import"] else command
    started = time.perf_counter()
    result = kgserver(*args, "--db", sqlite_writer, home=tmp_path / "home", env={"KGSERVER_LOCK_TIMEOUT": "0.5"})
    assert time.perf_counter() - started < 10
    assert_one_line_error(
        result, 75, f"{action}: the store {sqlite_writer} is locked by another writer", "0.5 s", "retry",
        "KGSERVER_LOCK_TIMEOUT",
    )
    # Readers are not blocked by the writer (WAL).
    listed = kgserver("graphs", "--db", sqlite_writer, home=tmp_path / "home")
    assert listed.returncode == 0 and "g" in listed.stdout


def test_the_lock_timeout_setting_is_checked(sqlite_store: str, tmp_path: Path) -> None:
    result = kgserver("graphs", "--db", sqlite_store, home=tmp_path / "home", env={"KGSERVER_LOCK_TIMEOUT": "soon"})
    assert_one_line_error(result, 2, "KGSERVER_LOCK_TIMEOUT='soon' is not a number of seconds")


def test_a_locked_postgresql_store_fails_after_the_lock_timeout(
    database_factory: Callable[[str], AbstractContextManager[str]], data: Path, tmp_path: Path
) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    with database_factory("postgresql") as db_url:
        url = make_url(db_url)
        with psycopg.connect(
            host=url.host, port=url.port or 5432, user=url.username, dbname=url.database, autocommit=True
        ) as holder:  # another writer: the advisory lock is per database, whatever the schema
            holder.execute("SELECT pg_advisory_lock(%s)", (PG_WRITE_LOCK,))
            result = kgserver(
                "import", str(data), "--graph", "g", "--db", db_url, home=tmp_path / "home",
                env={"KGSERVER_LOCK_TIMEOUT": "0.5"},
            )
            assert_one_line_error(result, 75, "importing into graph 'g'", "locked by another writer")
        imported = kgserver("import", str(data), "--graph", "g", "--db", db_url, home=tmp_path / "home")
        assert imported.returncode == 0, imported.stderr


def test_a_graph_named_before_names_were_checked_can_be_listed_and_deleted(sqlite_store: str, tmp_path: Path) -> None:
    legacy = "x@y/" + "z" * 300
    with open_store(sqlite_store) as store, store.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE graphs SET name = ? WHERE name = 'g'", (legacy,))
    listed = kgserver("graphs", "--json", "--db", sqlite_store, home=tmp_path / "home")
    assert listed.returncode == 0 and legacy in listed.stdout
    deleted = kgserver("graphs", "delete", legacy, "--db", sqlite_store, home=tmp_path / "home")
    assert deleted.returncode == 0, deleted.stderr
