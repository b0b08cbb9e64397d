"""What the hostile-input tests share: the CLI run in this process, a tiny graph."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kgserver.graph import Snapshot

KGSERVER = str(Path(sys.executable).with_name("kgserver"))
NUM_ENTITIES, NUM_RELATIONS = 30, 3


def cli_in_process(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kgserver ARGS`` through ``main()`` in this process: exit code, stdout, stderr.

    The environment holds no other ``KGSERVER_*`` setting than ``KGSERVER_HOME``
    and ``env``. An exception escaping ``main()`` fails the test (it would reach a
    user as a traceback).
    """
    from kgserver.cli import main

    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("KGSERVER_")]:
            patch.delenv(key)
        for key, value in {"KGSERVER_HOME": str(home), **(env or {})}.items():
            patch.setenv(key, value)
        patch.setattr(sys, "argv", ["kgserver", *args])
        patch.setattr(sys, "stdout", out)
        patch.setattr(sys, "stderr", err)
        with pytest.raises(SystemExit) as exited:
            main()
    code = exited.value.code
    return subprocess.CompletedProcess(args, code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


def tiny_snapshot() -> Snapshot:
    """Thirty entities, three relations, every split non-empty."""
    triples = torch.tensor(
        [(h, r, (h * (r + 2) + 1) % NUM_ENTITIES) for r in range(NUM_RELATIONS) for h in range(NUM_ENTITIES)]
    )
    return Snapshot(
        name="tiny",
        entities=[f"http://example.org/e{i}" for i in range(NUM_ENTITIES)],
        relations=[f"http://example.org/r{i}" for i in range(NUM_RELATIONS)],
        train=triples[:70],
        valid=triples[70:80],
        test=triples[80:],
    )
