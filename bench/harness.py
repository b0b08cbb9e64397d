"""What the serving benchmarks share: start a ``kgserver serve`` process and wait until it
answers, stop it, and the percentile the tables report.

Run from ``bench/`` scripts (their folder is on ``sys.path``): ``from harness import ...``.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from kgserver.client import KGClient

POLL_SECONDS = 0.05


def percentile(values: list[float], q: float) -> float:
    """The value at quantile ``q`` of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def tail(text: str, characters: int = 4000) -> str:
    """The end of a child's output for an error message: bounded, and never blank."""
    text = text.rstrip()
    if not text:
        return "(no output)"
    return text if len(text) <= characters else "..." + text[-characters:]


def log_tail(path: Path, characters: int = 4000) -> str:
    return tail(path.read_text(errors="replace"), characters)


def start_server(
    command: list[str], log_path: Path, *, env: dict[str, str] | None = None, timeout: float = 600
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``command`` (a ``kgserver serve`` on ``--port 0``), logging to ``log_path``; return the
    process and its address once it has logged ready (with ``--workers``, once every worker has
    loaded) and health says SERVING.

    Raises SystemExit with the log's tail if the server exits first or is not ready within
    ``timeout`` seconds; the process is killed then.
    """
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            text = log_path.read_text(errors="replace")
            found = re.search(r"listening on (\S+:\d+)", text)
            if found and "ready (pid" in text:
                with KGClient(found.group(1)) as client:
                    health = client.health(wait=max(1.0, deadline - time.monotonic()))
                if health != "SERVING":
                    raise SystemExit(f"server logged ready but health says {health}:\n{log_tail(log_path)}")
                return process, found.group(1)
            if process.poll() is not None:
                raise SystemExit(f"server exited with code {process.returncode} before ready:\n{log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise SystemExit(f"server not ready after {timeout:g} s:\n{log_tail(log_path)}")
            time.sleep(POLL_SECONDS)
    except BaseException:
        stop(process)
        raise


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM the server and wait for it (SIGKILL after ``timeout`` seconds); its exit code."""
    process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
