"""``kgserver models ...`` (plugin types and the MLflow Model Registry) and ``kgserver ui``.

MLflow, torch and the plugins are imported inside the commands so ``kgserver --help``
stays fast. The options defined here (``TrackingUriOption``, ``RegisterAsOption``,
``NoTrackingOption``) are shared with ``kgserver train``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from kgserver.cli.app import JsonOption, app, echo_json, models_app

TrackingUriOption = typer.Option(
    None,
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    show_envvar=True,
    help=(
        "MLflow tracking and registry URI, used as given (sqlite:///..., postgresql://..., "
        "http://host:port). Default: the embedded store $KGSERVER_HOME/mlflow.db."
    ),
)
RegisterAsOption = typer.Option(
    None,
    "--register-as",
    help=(
        "Registered model name for the new version (default: GRAPH-MODEL, e.g. codex-compgcn): "
        "letters, digits, '_', '.' and '-'."
    ),
)
NoTrackingOption = typer.Option(
    False,
    "--no-tracking",
    help="Do not use MLflow: save the model bundle under $KGSERVER_HOME/models/ instead.",
)

console = Console()


def _client(tracking_uri: str | None) -> Any:
    from kgserver.tracking.backend import connect

    return connect(tracking_uri)


def _metric(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and not float(value).is_integer() else f"{value:g}"


@models_app.command("available")
def available(as_json: bool = JsonOption) -> None:
    """List the installed model plugin types: description, training mode, hyperparameters,
    their defaults and allowed values.

    The defaults are those the plugins were tuned with on a small graph (CoDEx-S).
    `kgserver train` keeps them there, and on larger graphs chooses a few settings
    by the graph's size and the machine unless they are given (--set or the
    option): embedding_dim (only when memory is short), batch_size, --mode auto,
    --eval-every and --threads. The rules follow the tables ("size_defaults" in
    --json).

    Plugins whose import failed are listed with their traceback (the others still work).
    """
    from kgserver.registry import available_models, failed_plugins
    from kgserver.training.defaults import RULES

    models = {name: _plugin_summary(cls) for name, cls in available_models().items()}
    failed = failed_plugins()
    if as_json:
        echo_json({"models": models, "failed": failed, "size_defaults": RULES}, indent=2)
        return
    for name, info in models.items():
        table = Table(title=f"[bold]{name}[/] ({info['training_mode']}): {info['description']}", title_justify="left")
        table.add_column("hyperparameter")
        table.add_column("type")
        table.add_column("default")
        table.add_column("allowed")
        hyperparameters: dict[str, dict[str, Any]] = info["hyperparameters"]
        for key, spec in hyperparameters.items():
            table.add_row(key, str(spec["type"]), repr(spec["default"]), spec["allowed"])
        console.print(table)
    if not models:
        console.print("no model plugins are installed (entry-point group kgserver.models)")
    else:
        title = "chosen by `kgserver train` from the graph's size unless given"
        rules = Table("setting", "rule", title=title, title_justify="left")
        for key, rule in RULES.items():
            rules.add_row(key, rule)
        console.print(rules)
    for name, trace in failed.items():
        console.print(f"[bold red]plugin {name!r} failed to import:[/]\n{trace}", highlight=False)


def _plugin_summary(cls: Any) -> dict[str, Any]:
    """A plugin's description, training mode, module and hyperparameter schema, JSON-ready."""
    import dataclasses

    from kgserver.registry import field_kind

    schema = cls.hyperparameters
    bounds, choices = schema.declared_bounds(), schema.declared_choices()
    hyperparameters: dict[str, dict[str, Any]] = {}
    for spec in dataclasses.fields(schema):
        if spec.name in bounds:
            allowed = bounds[spec.name].describe()
        elif spec.name in choices:
            allowed = "one of " + ", ".join(choices[spec.name])
        else:
            allowed = "true or false" if field_kind(spec.type) == "bool" else "-"
        hyperparameters[spec.name] = {"type": field_kind(spec.type), "default": _default(spec), "allowed": allowed}
    return {
        "description": cls.description,
        "training_mode": cls.training_mode,
        "module": cls.__module__,
        "hyperparameters": hyperparameters,
    }


def _default(field: Any) -> Any:
    import dataclasses

    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


@models_app.command("list")
def list_models(tracking_uri: str | None = TrackingUriOption, as_json: bool = JsonOption) -> None:
    """List registered models with their versions, aliases and test MRR."""
    from kgserver.tracking import catalog

    models = catalog.list_models(_client(tracking_uri))
    if as_json:
        echo_json(models, indent=2)
        return
    if not models:
        console.print("no registered models yet: train one with `kgserver train --graph NAME --model TYPE`")
        return
    table = Table("model", "version", "aliases", "graph", "type", "test MRR", "created (UTC)")
    for model in models:
        for version in model["versions"]:
            table.add_row(
                model["name"],
                version["version"],
                ", ".join(version["aliases"]),
                version["graph"] or "-",
                version["model_type"] or "-",
                _metric(version["test_mrr"]),
                version["created"],
            )
    console.print(table)


@models_app.command("show")
def show(
    ref: str = typer.Argument(..., help="NAME (newest version), NAME@ALIAS or NAME/VERSION."),
    tracking_uri: str | None = TrackingUriOption,
    as_json: bool = JsonOption,
) -> None:
    """Show one model version: aliases, tags, its run's metrics, hyperparameters and graph fingerprint."""
    from kgserver.tracking import catalog

    detail = catalog.show(_client(tracking_uri), ref)
    if as_json:
        echo_json(detail, indent=2)
        return
    console.print(
        f"[bold]{detail['name']}/{detail['version']}[/]  aliases: {', '.join(detail['aliases']) or '-'}  "
        f"status: {detail['status']}  run: {detail['run_id']}  created: {detail['created']}",
        highlight=False,
    )
    for title, values in (
        ("metrics", detail["metrics"]),
        ("parameters", detail["params"]),
        ("version tags", detail["tags"]),
        ("run tags", detail["run_tags"]),
    ):
        table = Table("key", "value", title=title, title_justify="left")
        for key in sorted(values):
            value = values[key]
            table.add_row(key, _metric(value) if isinstance(value, float) else str(value))
        console.print(table)


@models_app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Registered model name."),
    version: str = typer.Argument(..., help="Version number to point the alias at."),
    alias: str = typer.Option("champion", "--alias", help="Alias to set (servers follow NAME@ALIAS)."),
    tracking_uri: str | None = TrackingUriOption,
    as_json: bool = JsonOption,
) -> None:
    """Point NAME@ALIAS at VERSION (roll back the same way); servers following the alias swap to it."""
    from kgserver.tracking import catalog
    from kgserver.tracking.refs import check_alias

    check_alias(alias, "--alias")  # before connecting: the option is at fault, not the registry
    moved = catalog.promote(_client(tracking_uri), name, version, alias)
    if as_json:
        echo_json(moved, indent=2)
        return
    before = f" (was version {moved['previous']})" if moved["previous"] else ""
    console.print(f"{name}@{alias} -> version {version}{before}", highlight=False)


@models_app.command("compare")
def compare(
    name: str = typer.Argument(..., help="Registered model name."),
    tracking_uri: str | None = TrackingUriOption,
    as_json: bool = JsonOption,
) -> None:
    """Compare every version of NAME side by side: test/valid metrics and hyperparameters (differences in bold)."""
    from kgserver.tracking import catalog

    comparison = catalog.compare(_client(tracking_uri), name)
    if as_json:
        echo_json(comparison, indent=2)
        return
    versions = comparison["versions"]
    table = Table(
        "", *[f"v{v['version']}" + (f" ({', '.join(v['aliases'])})" if v["aliases"] else "") for v in versions]
    )
    for key in catalog.SUMMARY_METRICS:
        table.add_row(key, *[_metric(v["metrics"].get(key)) for v in versions])
    table.add_section()
    for key in comparison["params"]:
        label = f"[bold]{key}[/]" if key in comparison["differing_params"] else key
        table.add_row(label, *[str(v["params"].get(key, "-")) for v in versions])
    console.print(table)


@app.command("ui")
def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(5000, "--port", help="Port to listen on."),
    tracking_uri: str | None = TrackingUriOption,
) -> None:
    """Start the MLflow UI on kgserver's tracking store (embedded default) and print its URL.

    Runs in the foreground until interrupted. With an http(s) tracking URI there is
    nothing to start: that server already serves its UI.
    """
    from kgserver.tracking.backend import configure_mlflow, embedded_artifact_root, is_embedded, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"{uri} is an MLflow server with its own UI: open {uri}")
        return
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri]
    if is_embedded(uri):
        root = embedded_artifact_root()
        root.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", root.as_uri()]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    shown_host = f"[{host}]" if ":" in host else host
    typer.echo(f"MLflow UI for {uri} at http://{shown_host}:{port}/ (Ctrl-C to stop)", err=False)
    sys.stdout.flush()
    configure_mlflow()  # the server inherits kgserver's MLflow settings
    # exec, not a child process: signals reach the server directly and it owns the terminal.
    os.execv(sys.executable, command)
