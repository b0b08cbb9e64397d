"""A broken version behind an alias: fetched and logged once, not on every poll, until the alias moves.

The holder polls for real (a background thread at 20 polls per second); the
broken version is a real bundle whose weights file is truncated, so loading it
fails the way a damaged artifact does.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
from serving.helpers import make_snapshot, random_bundle

from kgserver.errors import TrackingUnavailable
from kgserver.serving.holder import ModelHolder
from kgserver.serving.served import ServedModel
from kgserver.tracking.bundle import load_bundle

POLL_SECONDS = 0.05


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("versions")
    good = random_bundle(directory / "good", make_snapshot())
    broken = directory / "broken"
    shutil.copytree(good, broken)
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return {"toy/1": good, "toy/2": broken, "toy/3": broken, "toy/4": good}


def errors_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and text in r.getMessage()]


def test_a_broken_version_is_fetched_and_logged_once_until_the_alias_moves(
    bundles: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    alias = {"toy@champion": "toy/1"}
    builds: list[str] = []

    def build(ref: str, version: str) -> ServedModel:
        builds.append(version)
        return ServedModel.build(ref, load_bundle(bundles[version], version=version))

    holder = ModelHolder(["toy@champion"], alias.__getitem__, build, POLL_SECONDS)
    holder.load()
    caplog.set_level(logging.DEBUG, logger="kgserver.serving.holder")
    holder.start_polling()
    try:
        alias["toy@champion"] = "toy/2"
        time.sleep(20 * POLL_SECONDS)  # about 20 polls
        assert builds == ["toy/1", "toy/2"], "the broken version was fetched again"
        [error] = errors_about(caplog, "toy/2")
        message = error.getMessage()
        assert message.startswith("toy@champion: cannot load toy/2 (")
        assert "still serving toy/1; not retried until toy@champion names another version" in message
        assert error.exc_info is None and "\n" not in message, "the ERROR line carries a traceback"
        assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records), "no traceback at DEBUG"
        assert holder.get().version == "toy/1"

        alias["toy@champion"] = "toy/3"  # the alias moves: to another broken version, tried and logged once
        time.sleep(20 * POLL_SECONDS)
        assert builds == ["toy/1", "toy/2", "toy/3"] and len(errors_about(caplog, "toy/3")) == 1

        alias["toy@champion"] = "toy/4"
        deadline = time.monotonic() + 30
        while holder.get().version != "toy/4" and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        assert holder.get().version == "toy/4"

        alias["toy@champion"] = "toy/2"  # moved again: the old failure is tried afresh, once
        time.sleep(20 * POLL_SECONDS)
        assert builds == ["toy/1", "toy/2", "toy/3", "toy/4", "toy/2"]
        assert len(errors_about(caplog, "toy/2")) == 2
    finally:
        holder.stop()


def test_an_unreachable_registry_is_logged_once_until_it_answers_again(
    bundles: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    reachable = {"now": True}

    def resolve(ref: str) -> str:
        if not reachable["now"]:
            raise TrackingUnavailable("cannot reach the tracking server at http://mlflow:5000")
        return "toy/1"

    def build(ref: str, version: str) -> ServedModel:
        return ServedModel.build(ref, load_bundle(bundles[version], version=version))

    holder = ModelHolder(["toy@champion"], resolve, build, POLL_SECONDS)
    holder.load()
    caplog.set_level(logging.INFO, logger="kgserver.serving.holder")
    reachable["now"] = False
    for _ in range(20):
        holder.poll_once()
    [error] = errors_about(caplog, "cannot resolve")
    assert "TrackingUnavailable: cannot reach the tracking server" in error.getMessage() and error.exc_info is None
    reachable["now"] = True
    holder.poll_once()
    assert "toy@champion resolves again (to toy/1)" in caplog.text
    assert holder.get().version == "toy/1"
