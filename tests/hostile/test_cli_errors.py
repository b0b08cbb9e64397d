"""The CLI's one translation (``kgserver.cli.main``): one line and an exit code, a
traceback only when asked for with --debug or KGSERVER_DEBUG=1."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hostile.helpers import KGSERVER
from hostile.helpers import cli_in_process as kgserver
from kgserver.cli import INTERNAL_ERROR_EXIT_CODE

# Square brackets: rich markup if it were read as such ("[/x]" closes no tag: an error).
BOOM = "boom [bold]not markup[/bold] [/x]"


@pytest.fixture()
def broken_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug stand-in: opening the store raises an exception kgserver does not expect."""

    def fail(url: str | None = None) -> None:
        raise RuntimeError(BOOM + "\nsecond line")

    monkeypatch.setattr("kgserver.store.open_store", fail)


def test_an_unexpected_exception_is_one_line_with_a_hint(broken_store: None, tmp_path: Path) -> None:
    result = kgserver("graphs", home=tmp_path)
    assert result.returncode == INTERNAL_ERROR_EXIT_CODE == 70
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: internal error (RuntimeError: {BOOM})")
    assert "--debug" in line and "KGSERVER_DEBUG=1" in line


@pytest.mark.parametrize(("args", "env"), [(["--debug"], {}), ([], {"KGSERVER_DEBUG": "1"})], ids=["option", "env"])
def test_debug_shows_the_traceback_on_purpose(
    broken_store: None, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    result = kgserver(*args, "graphs", home=tmp_path, env=env)
    assert result.returncode == INTERNAL_ERROR_EXIT_CODE
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f"RuntimeError: {BOOM}" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: internal error (RuntimeError")


def test_debug_keeps_the_exit_code_of_a_known_error(tmp_path: Path) -> None:
    result = kgserver("--debug", "graphs", "delete", "missing", home=tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "GraphNotFound" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: graph 'missing' does not exist"


def test_a_message_with_brackets_is_printed_as_written(tmp_path: Path) -> None:
    """A file name is part of the message; it is text, not rich markup (which would
    drop "[bold]" and "[red]" from it)."""
    folder = tmp_path / "[bold]data[red]"
    folder.mkdir()
    bad = folder / "bad.nt"
    bad.write_text("<http://a> <http://b> .\n")
    result = kgserver("import", str(bad), "--graph", "g", home=tmp_path / "home")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}:1:")


def test_the_console_script_translates_the_same_way(tmp_path: Path) -> None:
    """Through the installed script: an unexpected exception (here: a bug stand-in made
    with a sitecustomize that breaks open_store) prints one line, exit code 70."""
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import kgserver.store\n"
        "def fail(url=None):\n"
        f"    raise RuntimeError({BOOM!r})\n"
        "kgserver.store.open_store = fail\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KGSERVER_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(patch), environment.get("PYTHONPATH")]))
    environment["KGSERVER_HOME"] = str(tmp_path / "home")
    result = subprocess.run(
        [KGSERVER, "graphs"], capture_output=True, text=True, env=environment, timeout=120, check=False
    )
    assert result.returncode == 70, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: internal error (RuntimeError: {BOOM})")
