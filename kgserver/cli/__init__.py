"""Command-line interface: ``kgserver COMMAND``.

Every stage's commands live in their own module; this package only assembles
them and translates :class:`~kgserver.errors.KGServerError` into a message and
an exit code, the one place where that happens for the CLI.
"""

from __future__ import annotations

import sys

from rich.console import Console

from kgserver.errors import KGServerError
from kgserver.cli.app import app
from kgserver.cli import data, models, serving, training  # noqa: F401  (registers commands)


def main() -> None:
    """Entry point of the ``kgserver`` console script."""
    try:
        app()
    except KGServerError as error:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {error}", highlight=False)
        sys.exit(error.exit_code)
