"""The hostile-load benchmark's mix, small and short: 8 threads for 5 s against the real `kgserver serve`.

Runs ``bench/hostile.py --tiny`` (a 300-entity model with 170-character IRIs and a
1 MiB response budget, so large, oversized and budget-waiting requests all
occur) and requires what the benchmark requires at full size: no valid request
failed, every invalid or oversized one got its exact code with a short message
naming its culprit, the server's anonymous RSS grew by at most 10%, no traceback in its log.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hostile.py"


@pytest.mark.timeout(600)
def test_a_short_hostile_mix_gets_every_status_right(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--threads", "8", "--seconds", "5", "--warmup", "3",
         "--server-arg=--response-memory-mb=1"],
        check=False,
        capture_output=True,
        text=True,
        timeout=500,
        env={**os.environ, "KGSERVER_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "problems: 0" in result.stdout and "RESULT: PASS" in result.stdout
    calls = dict(re.findall(r"^\| (large|oversized): .* \| (\d+) \|$", result.stdout, re.MULTILINE))
    assert int(calls["large"]) > 0 and int(calls["oversized"]) > 0, result.stdout
