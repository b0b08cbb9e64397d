"""Command-line interface: ``kgserver COMMAND``.

Every stage's commands live in their own module; this package only assembles
them and, in :func:`main`, turns every exception that reaches it into one line on
stderr and an exit code, the one place where that happens for the CLI:

* a :class:`~kgserver.errors.KGServerError`: ``error: <message>``, exit code its
  ``exit_code`` (1; 2 for a setting or option that cannot be used; 75 for a store
  locked by another writer);
* anything else is a bug: ``error: internal error (<type>: <message>)``, exit code
  :data:`INTERNAL_ERROR_EXIT_CODE`, and a hint to rerun with ``--debug``.

No Python traceback reaches a user unless asked for: ``kgserver --debug COMMAND``
or ``KGSERVER_DEBUG=1`` prints it (before the same line and exit code).
"""

from __future__ import annotations

import sys
import traceback

import typer
from rich.console import Console
from rich.text import Text

from kgserver.cli import data, models, serving, training  # noqa: F401  (registers commands)
from kgserver.cli.app import app
from kgserver.errors import KGServerError

DEBUG_ENV = "KGSERVER_DEBUG"
INTERNAL_ERROR_EXIT_CODE = 70
"""Exit code of an unexpected exception (EX_SOFTWARE): a bug, to be reported."""

_debug = False


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar=DEBUG_ENV,
        show_envvar=True,
        help="On an error, print the Python traceback as well as the message.",
    ),
) -> None:
    # No docstring: the application's help (cli/app.py) describes kgserver.
    global _debug
    _debug = debug


def main() -> None:
    """Entry point of the ``kgserver`` console script."""
    try:
        app()
    except KGServerError as error:
        _report(str(error), error.exit_code)
    except Exception as error:  # noqa: BLE001  (the one place every other exception ends)
        _report(
            f"internal error ({type(error).__name__}: {_first_line(error)}); this is a bug in "
            f"kgserver: rerun with --debug (or {DEBUG_ENV}=1) for the traceback and report it",
            INTERNAL_ERROR_EXIT_CODE,
        )


def _report(message: str, exit_code: int) -> None:
    """One line on stderr (the message is plain text, never read as rich markup)."""
    if _debug:
        traceback.print_exc()
    line = Text.assemble(("error:", "bold red"), " ", message)
    Console(stderr=True, soft_wrap=True, highlight=False).print(line)
    sys.exit(exit_code)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else "no message"
    return text if len(text) <= 300 else text[:300] + "..."
