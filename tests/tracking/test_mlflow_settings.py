"""kgserver's MLflow settings are applied where kgserver configures MLflow, not on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from kgserver.tracking.backend import MLFLOW_SETTINGS

PROBE = """
import json, os
import kgserver.tracking, kgserver.models  # importing changes nothing
after_import = {key: os.environ.get(key) for key in KEYS}
from kgserver.tracking.backend import client_for
client_for("sqlite:///" + os.path.join(os.environ["PROBE_DIR"], "mlflow.db"))
after_client = {key: os.environ.get(key) for key in KEYS}
print(json.dumps([after_import, after_client]))
"""


def run_probe(tmp_path: object, **preset: str) -> list[dict[str, str | None]]:
    env = {key: value for key, value in os.environ.items() if key not in MLFLOW_SETTINGS}
    env.update(preset, PROBE_DIR=str(tmp_path))
    code = f"KEYS = {sorted(MLFLOW_SETTINGS)!r}\n{PROBE}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_sets_nothing_and_the_client_applies_the_settings(tmp_path: object) -> None:
    after_import, after_client = run_probe(tmp_path)
    assert after_import == {key: None for key in MLFLOW_SETTINGS}
    assert after_client == MLFLOW_SETTINGS


def test_a_users_own_setting_wins(tmp_path: object) -> None:
    _, after_client = run_probe(tmp_path, MLFLOW_DISABLE_TELEMETRY="false")
    assert after_client["MLFLOW_DISABLE_TELEMETRY"] == "false"
