"""The Typer application objects that every command module attaches to.

Command modules import heavy libraries (torch, dgl, mlflow) inside the command
functions, so ``kgserver --help`` stays fast.
"""

from __future__ import annotations

from typing import Optional

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

OptionalStr = Optional[str]
