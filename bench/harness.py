"""What the benchmarks share: run a child command measured from the outside (wall time, peak
RSS, its JSON line), start a ``kgserver serve`` process and wait until it answers, stop it,
and the percentile the tables report.

Run from ``bench/`` scripts (their folder is on ``sys.path``): ``from harness import ...``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass
class Measured:
    """One finished child process, measured from the outside."""

    command: list[str]
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float  # user + system, the process and its reaped children: unaffected by other load
    stdout: str
    stderr: str


def run_measured(command: list[str], env: dict[str, str], what: str) -> Measured:
    """Run ``command`` to its end; wall and CPU seconds and peak RSS (``wait4``: the process and its reaped
    children).

    A non-zero exit ends the script with the command and its stderr tail.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    if process.returncode != 0:
        raise SystemExit(f"{what} failed (exit code {process.returncode}): $ {shlex.join(command)}\n{tail(stderr)}")
    cpu_seconds = usage.ru_utime + usage.ru_stime
    return Measured(command, seconds, usage.ru_maxrss / 1024, cpu_seconds, stdout, stderr)  # ru_maxrss: KiB on Linux


def last_json(stdout: str, what: str) -> dict[str, Any]:
    """The JSON object on the last line of ``stdout``."""
    lines = stdout.strip().splitlines()
    try:
        value = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"{what}: expected a JSON line on stdout, got:\n{tail(stdout)}") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{what}: expected a JSON object, got {lines[-1][:200]}")
    return value
