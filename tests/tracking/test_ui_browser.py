"""``kgserver ui`` serves the MLflow UI, and a real browser sees the registered model in it.

Headless Debian ``chromium`` renders the MLflow UI (a JavaScript app) and dumps the
DOM. The test needs chromium installed (``.ci/run`` installs it); without it the test
fails rather than skips, because the UI is part of what kgserver promises.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from kgserver.cli.app import app
from kgserver.graph import Snapshot

from .helpers import free_port, quiet_env, script, serving_process, track_training

NAME = "ui-tiny"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,900",
    "--virtual-time-budget=30000",
]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (apt-get install chromium); the browser test cannot run"
    return found


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


def test_ui_shows_registered_model_and_version(home: Path, tmp_path: Path, snapshot: Snapshot) -> None:
    run, _ = track_training(snapshot, register_as=NAME)
    assert run.registered_version == f"{NAME}/1"
    promoted = CliRunner().invoke(app, ["models", "promote", NAME, "1"])
    assert promoted.exit_code == 0, promoted.output
    port = free_port()
    log = tmp_path / "ui" / "ui.log"
    log.parent.mkdir()
    command = [script("kgserver"), "ui", "--host", "127.0.0.1", "--port", str(port)]
    with serving_process(
        command, f"http://127.0.0.1:{port}/health", log, quiet_env(KGSERVER_HOME=str(home)), timeout=300
    ):
        first_line = log.read_text().splitlines()[0]
        assert (
            first_line == f"MLflow UI for sqlite:///{home / 'mlflow.db'} at http://127.0.0.1:{port}/ (Ctrl-C to stop)"
        )
        page = f"http://127.0.0.1:{port}/#/models/{NAME}"
        dom = browse(page, tmp_path / "profile-dom", "--dump-dom").stdout
        (tmp_path / "model-page.html").write_text(dom)
        screenshot = tmp_path / "model-page.png"
        browse(page, tmp_path / "profile-shot", f"--screenshot={screenshot}")
    assert NAME in dom, f"model name missing from the rendered page; DOM saved in {tmp_path / 'model-page.html'}"
    assert "Version 1" in dom, f"version missing from the rendered page; DOM saved in {tmp_path / 'model-page.html'}"
    assert "champion" in dom, f"alias missing from the rendered page; DOM saved in {tmp_path / 'model-page.html'}"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
