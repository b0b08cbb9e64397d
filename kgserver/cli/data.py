"""kgserver CLI commands (data)."""

from __future__ import annotations

from kgserver.cli.app import app  # noqa: F401
