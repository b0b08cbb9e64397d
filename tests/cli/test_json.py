"""Every ``--json`` output is strict JSON: a non-finite float is ``null``, never a bare NaN."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from kgserver.cli.app import echo_json


def test_non_finite_floats_become_null_at_any_depth(capsys: pytest.CaptureFixture[str]) -> None:
    echo_json({"score": float("nan"), "rows": [{"x": float("inf")}, (1.5, float("-inf"))], "n": 3})
    printed = capsys.readouterr().out
    assert "NaN" not in printed and "Infinity" not in printed
    assert json.loads(printed) == {"score": None, "rows": [{"x": None}, [1.5, None]], "n": 3}


def test_indented_output_is_sorted_and_timestamps_are_text(capsys: pytest.CaptureFixture[str]) -> None:
    moment = datetime(2026, 12, 6, tzinfo=UTC)
    echo_json({"b": 1, "a": moment}, indent=2)
    printed = capsys.readouterr().out
    assert printed.index('"a"') < printed.index('"b"')
    assert json.loads(printed) == {"a": str(moment), "b": 1}
