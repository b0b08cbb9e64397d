"""The human-readable prediction table marks entities added after training in a ``new`` column."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kgserver.cli.serving import _print_predictions

EX = "http://example.org/"


def answer(*rows: tuple[str, str, bool]) -> SimpleNamespace:
    scored = [SimpleNamespace(entity=EX + name, label=label, score=1.0, new_entity=new) for name, label, new in rows]
    return SimpleNamespace(results=[scored], model_version="toy/1", store_revision=2)


def printed(capsys: pytest.CaptureFixture[str], *rows: tuple[str, str, bool]) -> list[str]:
    _print_predictions(None, answer(*rows), EX + "q", EX + "r", None, labels=True, as_json=False)  # type: ignore[arg-type]
    return capsys.readouterr().out.splitlines()


def columns(lines: list[str]) -> list[str]:
    """The column names of the table's header row."""
    header = next(line for line in lines if "entity" in line)
    return [word for word in header.split() if word.isalpha() or word == "#"]


def test_new_entities_are_marked_in_their_own_column(capsys: pytest.CaptureFixture[str]) -> None:
    lines = printed(capsys, ("old", "Old One", False), ("fresh", "Fresh One", True))
    assert columns(lines) == ["#", "entity", "label", "new", "score"]
    old = next(line for line in lines if f"{EX}old" in line)
    fresh = next(line for line in lines if f"{EX}fresh" in line)
    assert "Fresh One" in fresh and "yes" in fresh and "Old One" in old and "yes" not in old
    assert "store revision 2" in "\n".join(lines)


def test_no_new_column_when_every_answer_was_trained_on(capsys: pytest.CaptureFixture[str]) -> None:
    lines = printed(capsys, ("old", "Old One", False))
    assert columns(lines) == ["#", "entity", "label", "score"]
    assert "yes" not in "\n".join(lines)
