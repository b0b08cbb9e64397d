"""The Typer application objects that every command module attaches to.

Command modules import heavy libraries (torch, dgl, mlflow) inside the command
functions, so ``kgserver --help`` stays fast.
"""

from __future__ import annotations

import json
import math
from typing import Any

import typer

app = typer.Typer(
    name="kgserver",
    help=(
        "Knowledge-graph completion server: import RDF into a SQL store, train graph "
        "neural link predictors, track them in MLflow and serve them over gRPC."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
graphs_app = typer.Typer(
    help="List the graphs in the store, or delete one.", invoke_without_command=True
)
db_app = typer.Typer(help="Manage the store's database schema.", no_args_is_help=True)
models_app = typer.Typer(
    help="Model plugins and the MLflow Model Registry: available types, versions, aliases.",
    no_args_is_help=True,
)
query_app = typer.Typer(
    help="Ask a running kgserver (gRPC) for predictions, scores or embeddings.",
    no_args_is_help=True,
)
app.add_typer(graphs_app, name="graphs")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(query_app, name="query")

DbOption = typer.Option(
    None,
    "--db",
    envvar="KGSERVER_DATABASE_URL",
    help="SQLAlchemy database URL (default: SQLite under $KGSERVER_HOME, ./.kgserver/).",
    show_envvar=True,
)
JsonOption = typer.Option(False, "--json", help="Print one machine-readable JSON object.")


def echo_json(value: Any, *, indent: int | None = None) -> None:
    """Print ``value`` as one strict JSON document on stdout.

    JSON has no NaN or Infinity: a non-finite float (a diverged loss, an overflowing
    score) is written as ``null`` so every consumer can parse the output. Values
    JSON does not know (timestamps) are written as their text.
    """
    print(json.dumps(_finite(value), indent=indent, sort_keys=indent is not None, default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
