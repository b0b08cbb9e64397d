"""Data commands: ``import``, ``graphs``, ``graphs delete``, ``db upgrade``.

The store and the importer (SQLAlchemy, numpy, pyoxigraph) are imported inside
the commands so that ``kgserver --help`` stays fast.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from kgserver.cli.app import DbOption, JsonOption, app, db_app, echo_json, graphs_app
from kgserver.config import GRAPH_NAME_RULE
from kgserver.rdf.formats import FORMATS, SPLITS

if TYPE_CHECKING:
    from rich.table import Table

    from kgserver.rdf.importer import ImportSummary, ProgressCallback
    from kgserver.store import GraphInfo

# The choices are built from the one list of each (FORMATS, SPLITS), which mypy's Enum
# plugin cannot read (it wants literal members): hence the ignores.
FormatChoice = enum.Enum("FormatChoice", {name: name for name in ("auto", *FORMATS)}, type=str)  # type: ignore[misc]
SplitChoice = enum.Enum("SplitChoice", {name: name for name in SPLITS}, type=str)  # type: ignore[misc]


@app.command("import")
def import_command(
    paths: list[Path] = typer.Argument(
        ..., help="RDF or TSV files to import, each optionally gzip-compressed (.gz).", show_default=False
    ),
    graph: str = typer.Option(
        ...,
        "--graph",
        "-g",
        help=f"Name of the graph to import into (created if new): {GRAPH_NAME_RULE}.",
    ),
    format: FormatChoice = typer.Option(
        "auto",
        "--format",
        "-f",
        help=(
            "File format. auto decides by extension: .nt, .nq, .ttl, .trig, .rdf/.owl/.xml (RDF/XML), "
            ".jsonld, .tsv (head<TAB>relation<TAB>tail), each optionally followed by .gz."
        ),
    ),
    split: SplitChoice | None = typer.Option(
        None,
        "--split",
        help=(
            "Put every triple of these files in this split. Without it, a file whose name starts "
            "with train, valid or test (e.g. train.nt.gz, valid.tsv) goes to that split and any "
            "other file to none. A triple already in the graph keeps its split."
        ),
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        help=(
            "RDF formats: the base IRI relative IRIs resolve against (default: the file's file:// URI). "
            "tsv: a prefix that turns each field into an IRI (default: fields are stored as given)."
        ),
    ),
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Import RDF (or TSV triples) into a graph, all or nothing.

    All files of one call are imported in a single transaction: if any file is
    malformed the command names the file and line and the store is left exactly
    as it was. Importing the same data again adds nothing and says so. Literals are
    stored as written; literal-valued triples are not used for training by default.
    """
    from kgserver.rdf.importer import import_files
    from kgserver.store import open_store

    options = {"format": format.value, "split": split.value if split else None, "base": base}
    with open_store(db) as store:
        if Console(stderr=True).is_terminal and not json_output:
            with _progress_bar() as on_progress:
                summary = import_files(store, paths, graph, on_progress=on_progress, **options)
        else:
            summary = import_files(store, paths, graph, **options)
    if json_output:
        echo_json(summary.to_json())
    else:
        typer.echo(_summary_line(summary))


@contextmanager
def _progress_bar() -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr, one row per file (bytes read, triples, triples/s)."""
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[triples]:>12,} triples"),
        TextColumn("{task.fields[rate]:>10,.0f} triples/s"),
        TimeElapsedColumn(),
    )
    tasks: dict[Path, TaskID] = {}
    started: dict[Path, float] = {}
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:

        def on_progress(path: Path, done: int, size: int, triples: int) -> None:
            if path not in tasks:
                started[path] = time.perf_counter()
                tasks[path] = progress.add_task(path.name, total=max(size, 1), triples=0, rate=0.0)
            elapsed = max(time.perf_counter() - started[path], 1e-9)
            progress.update(tasks[path], completed=done, triples=triples, rate=triples / elapsed)

        yield on_progress


def _summary_line(summary: ImportSummary) -> str:
    files = f"{len(summary.files)} file{'s' if len(summary.files) != 1 else ''}"
    rate = summary.triples / summary.seconds if summary.seconds > 0 else 0.0
    timing = f"in {summary.seconds:.2f} s ({rate:,.0f} triples/s)"
    if summary.added == 0 and summary.triples > 0:
        return (
            f"graph {summary.graph!r}: nothing new - all {summary.triples:,} triples from {files} "
            f"were already there (skipped_duplicates={summary.skipped_duplicates:,}) {timing}"
        )
    return (
        f"graph {summary.graph!r}: added {summary.added:,} triples from {files}, "
        f"skipped {summary.skipped_duplicates:,} duplicates, {timing}"
    )


GRAPHS_HELP = """List the graphs with entity, relation and triple counts per split, or delete one.

Counts follow what training reads: entities are the nodes of non-literal triples,
and literal-valued triples (labels, attributes) are counted apart. Use
`kgserver graphs delete NAME` to remove a graph.
"""


@graphs_app.callback(invoke_without_command=True, help=GRAPHS_HELP)
def graphs_command(
    ctx: typer.Context,
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """List the graphs (see GRAPHS_HELP); does nothing when a subcommand runs."""
    if ctx.invoked_subcommand is not None:
        return
    from kgserver.store import open_store

    with open_store(db) as store:
        infos = store.graphs()
        url = store.url
    if json_output:
        echo_json([_graph_json(info) for info in infos])
        return
    if not infos:
        typer.echo(f"no graphs in {url}; add one with `kgserver import FILE... --graph NAME`")
        return
    console = Console()
    if not console.is_terminal:  # piped: let the table keep its natural width
        console = Console(width=200)
    console.print(_graphs_table(infos))


def _graph_json(info: GraphInfo) -> dict[str, object]:
    return {
        "name": info.name,
        "entities": info.entities,
        "relations": info.relations,
        "triples": {**info.triples, "total": info.total_triples},
        "literal_triples": info.literal_triples,
        "sources": info.sources,
        "created_at": info.created_at.isoformat(),
    }


def _graphs_table(infos: list[GraphInfo]) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("graph", no_wrap=True)
    for column in ("entities", "relations", "train", "valid", "test", "no split", "literal", "files"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column))
    for info in infos:
        table.add_row(
            info.name,
            f"{info.entities:,}",
            f"{info.relations:,}",
            *(f"{info.triples[split]:,}" for split in ("train", "valid", "test", "none")),
            f"{info.literal_triples:,}",
            f"{info.sources:,}",
        )
    return table


@graphs_app.command("delete")
def graphs_delete_command(
    name: str = typer.Argument(..., help="The graph to delete.", show_default=False),
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Delete a graph: its triples, its import log, and every term and relation no
    other graph uses. Other graphs are untouched."""
    from kgserver.store import open_store

    with open_store(db) as store:
        deleted = store.delete_graph(name)
    if json_output:
        echo_json(asdict(deleted))
        return
    typer.echo(
        f"deleted graph {deleted.name!r}: {deleted.triples:,} triples, {deleted.terms:,} terms and "
        f"{deleted.relations:,} relations no other graph used"
    )


@db_app.command("upgrade")
def db_upgrade_command(db: str | None = DbOption) -> None:
    """Bring the database schema up to date (apply the Alembic migrations).

    Needed once for a new PostgreSQL database and after upgrading kgserver; the
    embedded SQLite default is upgraded automatically on first use.
    """
    from kgserver.store import upgrade_database

    url, revisions = upgrade_database(db)
    typer.echo(f"{url} is at schema revision {', '.join(sorted(revisions))} (current)")
