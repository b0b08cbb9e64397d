"""``kgserver train``, ``kgserver evaluate`` and ``kgserver partition``.

torch, DGL, the store and the plugins are imported inside the commands so that
``kgserver --help`` stays fast. ``train`` is a plain sequence (open the store,
snapshot the graph, build the model, train with an epoch observer, report), so
that run tracking can wrap the training step and add its observer.
"""

from __future__ import annotations

import dataclasses
import enum
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from kgserver.cli.app import DbOption, JsonOption, app, echo_json
from kgserver.cli.models import NoTrackingOption, RegisterAsOption, TrackingUriOption
from kgserver.errors import ConfigurationError

if TYPE_CHECKING:
    from kgserver.graph import Snapshot
    from kgserver.registry import KGModel
    from kgserver.training import TrainConfig, TrainResult


class ModeChoice(enum.StrEnum):
    auto = "auto"
    full = "full"
    sampled = "sampled"


class PrecisionChoice(enum.StrEnum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class SplitChoice(enum.StrEnum):
    train = "train"
    valid = "valid"
    test = "test"


GraphOption = typer.Option(..., "--graph", "-g", help="Name of the graph in the store.")
SeedOption = typer.Option(
    0, "--seed", help="Random seed (weights, data order, sampling; and the split of a graph stored without one)."
)
DeviceOption = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (CUDA needs a CUDA build of DGL).")
SplitRatioOption = typer.Option(
    "0.8,0.1,0.1",
    "--split-ratio",
    help="train,valid,test fractions for a graph stored without a split (a stored split is always used).",
)


@app.command("train")
def train_command(
    graph: str = GraphOption,
    model: str = typer.Option(..., "--model", "-m", help="Model type (see `kgserver models available`)."),
    epochs: int = typer.Option(100, "--epochs", help="Maximum number of epochs."),
    assignments: list[str] = typer.Option(
        [], "--set", help="Hyperparameter as key=value; repeat for several (e.g. --set embedding_dim=100)."
    ),
    seed: int = SeedOption,
    device: str = DeviceOption,
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Time budget; training stops cleanly and keeps the best checkpoint."
    ),
    mode: ModeChoice = typer.Option(
        ModeChoice.auto,
        "--mode",
        help="full: encode the whole graph each step; sampled: neighbour-sampled mini-batches; "
        "auto: full when the estimated memory fits.",
    ),
    patience: int = typer.Option(5, "--patience", help="Evaluations without a better validation MRR before stopping."),
    eval_every: int | None = typer.Option(
        None,
        "--eval-every",
        help="Evaluate on the validation split every N epochs (default: by the graph's size, 5 on small graphs).",
    ),
    valid_limit: int | None = typer.Option(
        None,
        "--valid-limit",
        help="Validate on at most N validation triples, a sample fixed by --seed (default: all, unless scoring "
        "them against every entity is very large work; the test split is always evaluated whole).",
    ),
    lr_decay: float = typer.Option(
        0.5,
        "--lr-decay",
        help="Multiply the learning rate by this after --lr-patience evaluations without improvement (1: never).",
    ),
    lr_patience: int | None = typer.Option(
        None,
        "--lr-patience",
        help="Decay the learning rate after every N evaluations without improvement "
        "(default: 1, or 2 when validation is more frequent than every 5 epochs).",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch, per process (default: the physical cores / processes)."
    ),
    precision: PrecisionChoice = typer.Option(
        PrecisionChoice.auto,
        "--precision",
        help="Matrix products of each training step in bf16 (float32 accumulation; parameters and evaluation "
        "stay float32) or fp32; auto: bf16 where this machine runs it at least 1.5x faster, measured at start.",
    ),
    nproc: int = typer.Option(
        1,
        "--nproc",
        help="Train with N local worker processes (DistributedDataParallel); under torchrun, leave it at 1.",
    ),
    split_ratio: str = SplitRatioOption,
    tracking_uri: str | None = TrackingUriOption,
    register_as: str | None = RegisterAsOption,
    no_tracking: bool = NoTrackingOption,
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Train a link-prediction model on a graph from the store and report filtered test metrics.

    Training stops at --epochs, when the validation MRR has not improved for
    --patience evaluations, or at --max-minutes; the best checkpoint (by
    validation MRR) is the one evaluated on the test split. The metrics are
    filtered MRR, Hits@1/3/10 and mean rank over head and tail prediction.

    Every training is an MLflow run in the experiment named after the graph, and
    registers a model version (--register-as, default GRAPH-MODEL); the tracking
    store is checked before the first epoch. --no-tracking saves the model bundle
    under $KGSERVER_HOME/models/ instead.

    --nproc N trains data-parallel in N processes on this machine; under torchrun
    (several machines) each process runs this command with --nproc 1. Either
    way each step's batch is shared among the processes, and rank 0 alone
    evaluates, reports and tracks: one MLflow run per job.

    Settings whose best value depends on the graph's size (embedding_dim when
    memory is short, batch_size, --eval-every, --lr-patience, --valid-limit,
    --mode auto, --threads, --precision auto) are chosen from the graph and the
    machine unless given: one line each on stderr, and the run records them
    (MLflow params auto.NAME, with the reason). The rules:
    `kgserver models available`.
    """
    from kgserver.training import TrainConfig, resolve_device
    from kgserver.training.distributed import environment_ranks, launch

    resolve_device(device)  # an unusable device fails before any work is done
    if not no_tracking:
        from kgserver.tracking.run import registered_model_name

        registered_model_name(
            register_as, graph, model
        )  # a name the registry cannot hold fails now, not after training
    if nproc < 1:
        raise ConfigurationError(f"--nproc must be at least 1, got {nproc}")
    if nproc > 1 and environment_ranks().distributed:
        raise ConfigurationError("--nproc starts its own workers; under torchrun leave --nproc at 1")
    config = TrainConfig(
        epochs=epochs,
        seed=seed,
        device=device,
        max_minutes=max_minutes,
        patience=patience,
        eval_every=TrainConfig.eval_every if eval_every is None else eval_every,
        lr_decay=lr_decay,
        lr_patience=TrainConfig.lr_patience if lr_patience is None else lr_patience,
        valid_limit=valid_limit,
        mode=mode.value,
        threads=threads,
        precision="bf16" if precision is PrecisionChoice.bf16 else "fp32",  # auto: size_defaults chooses
    )
    given = {
        "eval_every": eval_every,
        "lr_patience": lr_patience,
        "valid_limit": valid_limit,
        "threads": threads,
        "precision": None if precision is PrecisionChoice.auto else precision,
    }
    explicit = frozenset(name for name, value in given.items() if value is not None)
    job = TrainJob(
        graph,
        model,
        assignments,
        config,
        _ratio(split_ratio),
        tracking_uri,
        register_as,
        no_tracking,
        db,
        json_output,
        explicit,
    )
    _assigned(get_model_class(model), assignments)  # bad --set values fail before workers start
    if nproc == 1:
        run_train_job(job)
    else:
        launch(nproc, run_train_job, job)


@dataclass(frozen=True)
class TrainJob:
    """What one ``kgserver train`` does, as plain data a worker process can receive.

    ``explicit`` names the ``config`` fields the user gave; the others (and the
    hyperparameters ``assignments`` leave out) may be chosen by the graph's size.
    """

    graph: str
    model: str
    assignments: list[str]
    config: TrainConfig
    split_ratio: tuple[float, float, float]
    tracking_uri: str | None
    register_as: str | None
    no_tracking: bool
    db: str | None
    json_output: bool
    explicit: frozenset[str]


def get_model_class(model: str) -> type[KGModel]:
    from kgserver.registry import get_model

    return get_model(model)


def run_train_job(job: TrainJob) -> None:
    """Train as this process's rank (one process, a ``--nproc`` worker or a torchrun worker).

    Every rank loads the snapshot, makes the same size-aware choices (from the
    memory the smallest rank has) and builds the model from the same seed;
    rank 0 alone reports the choices, opens the MLflow run (or saves the
    untracked bundle), shows progress and prints the result.
    """
    from kgserver.graph import Snapshot
    from kgserver.store import open_store
    from kgserver.training import Observers, resolve_device, seed_everything
    from kgserver.training.defaults import GraphSize, Machine, size_defaults
    from kgserver.training.distributed import process_group
    from kgserver.training.trainer import train_rank

    with process_group(job.config.device) as (ranks, device):
        model_class = get_model_class(job.model)
        assigned = _assigned(model_class, job.assignments)
        with open_store(job.db) as store:
            snapshot = Snapshot.from_store(store, job.graph, split_ratio=job.split_ratio, seed=job.config.seed)
        sizing = size_defaults(
            GraphSize.of(snapshot),
            Machine.of_this_process(resolve_device(device), ranks, probe_bf16="precision" not in job.explicit),
            model_class,
            assigned,
            dataclasses.replace(job.config, device=device),
            job.explicit,
        )
        config = sizing.config
        seed_everything(config.seed)
        network = model_class(snapshot.num_entities, snapshot.num_relations, sizing.hyperparameters)
        if not ranks.is_main:
            train_rank(network, snapshot, config, None, ranks)
            return
        for line in sizing.lines():
            print(f"size-aware default: {line}", file=sys.stderr, flush=True)
        for warning in sizing.warnings:
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        if job.no_tracking:
            from kgserver.tracking import save_untracked

            with _epoch_progress(config.epochs) as progress:
                result = _main_result(train_rank(network, snapshot, config, progress, ranks))
            path = save_untracked(result.model, snapshot, job.register_as or f"{snapshot.name}-{job.model}")
            _note(f"tracking off (--no-tracking): model bundle saved to {path}")
            _report(result, snapshot, job.model, job.json_output, {"bundle_path": str(path)})
            return
        from kgserver.tracking import TrainingRun

        run = TrainingRun.start(
            network,
            snapshot,
            config,
            tracking_uri=job.tracking_uri,
            register_as=job.register_as,
            automatic={name: choice.reason for name, choice in sizing.chosen_hyperparameters.items()},
            automatic_train={name: choice.reason for name, choice in sizing.chosen_config.items()},
        )
        with run, _epoch_progress(config.epochs) as progress:
            result = _main_result(train_rank(network, snapshot, config, Observers(progress, run), ranks))
            version = run.finish(result)
        _note(f"registered model version {version} (MLflow run {run.run_id}); browse it with `kgserver ui`")
        _report(result, snapshot, job.model, job.json_output, {"registered_version": version, "run_id": run.run_id})


def _main_result(result: TrainResult | None) -> TrainResult:
    if result is None:  # train_rank gives rank 0 its result
        raise RuntimeError("rank 0 finished training without a result")
    return result


def _note(message: str) -> None:
    """A status line on stderr, so stdout holds only the result (or its JSON)."""
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)


def _assigned(model_class: type[KGModel], assignments: list[str]) -> dict[str, Any]:
    """The ``--set`` values by name, typed and checked (with the other fields' defaults) by the
    plugin's schema; a bad one is a configuration error."""
    schema = model_class.hyperparameters
    try:
        values = schema.parse_values(assignments)
        schema(**values)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"--set for model {model_class.name!r}: {error}") from error
    return values


def _ratio(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigurationError(f"--split-ratio expects three numbers like 0.8,0.1,0.1, got {text!r}")
    return parts


class _EpochLines:
    """Epoch observer for logs: one plain line per epoch on stderr, and within an epoch that takes
    longer, one line every ``STEP_LINE_SECONDS`` with the steps done and the time left."""

    STEP_LINE_SECONDS = 60.0

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.epoch_started = self.last_line = time.monotonic()

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        now = time.monotonic()
        if step == 1:
            self.epoch_started = self.last_line = now
            return
        if now - self.last_line < self.STEP_LINE_SECONDS or step == steps:
            return
        self.last_line = now
        elapsed = now - self.epoch_started
        left = elapsed / step * (steps - step)
        print(
            f"epoch {epoch}/{self.epochs}  step {step:,}/{steps:,} ({step / steps:.0%})  {elapsed:.0f} s, "
            f"about {left / 60:.1f} min left in this epoch",
            file=sys.stderr,
            flush=True,
        )

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        line = f"epoch {epoch}/{self.epochs}  loss {metrics['loss']:.4f}  {metrics['epoch_seconds']:.1f} s"
        if "valid_mrr" in metrics:
            line += f"  valid MRR {metrics['valid_mrr']:.4f}  Hits@10 {metrics['valid_hits_at_10']:.4f}"
        print(line, file=sys.stderr, flush=True)


class _EpochBar:
    """Epoch observer for a terminal: a rich progress bar with the loss and latest validation MRR."""

    def __init__(self, progress: Any, task: Any) -> None:
        self.progress, self.task = progress, task

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        update: dict[str, Any] = {"completed": epoch, "loss": f"{metrics['loss']:.4f}"}
        if "valid_mrr" in metrics:
            update["mrr"] = f"{metrics['valid_mrr']:.4f}"
        self.progress.update(self.task, **update)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        self.progress.update(self.task, step=f"{step:,}/{steps:,}")


@contextmanager
def _epoch_progress(epochs: int) -> Iterator[_EpochBar | _EpochLines]:
    """A progress bar on a terminal's stderr, plain lines otherwise (stdout keeps the result)."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield _EpochLines(epochs)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("epoch"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("step {task.fields[step]}"),
        TextColumn("valid MRR {task.fields[mrr]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        yield _EpochBar(progress, progress.add_task("train", total=epochs, loss="-", mrr="-", step="-"))


def _report(result: TrainResult, snapshot: Snapshot, model: str, json_output: bool, saved: dict[str, str]) -> None:
    summary = {"graph": snapshot.name, "model": model, **result.summary(), **saved}
    if json_output:
        echo_json(summary)
        return
    metrics = result.metrics
    typer.echo(
        f"{model} on {snapshot.name!r}: {_metrics_line(metrics, 'test_')} (valid MRR {metrics['valid_mrr']:.4f}); "
        f"{metrics['epochs']} epochs, best {result.best_epoch}, stopped by {result.stop_reason}, "
        f"{result.mode}-graph training, {metrics['seconds']:.1f} s"
    )


def _metrics_line(metrics: dict[str, float], prefix: str) -> str:
    return (
        f"{prefix.rstrip('_')} MRR {metrics[prefix + 'mrr']:.4f}, Hits@1/3/10 "
        f"{metrics[prefix + 'hits_at_1']:.4f}/{metrics[prefix + 'hits_at_3']:.4f}/"
        f"{metrics[prefix + 'hits_at_10']:.4f}, "
        f"mean rank {metrics[prefix + 'mean_rank']:.1f}"
    )


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Option(
        ..., "--model", "-m", help="NAME@ALIAS, NAME/VERSION, runs:/RUN_ID/model or a bundle directory."
    ),
    graph: str = GraphOption,
    split: SplitChoice = typer.Option(SplitChoice.test, "--split", help="Which split of the graph to rank."),
    seed: int = SeedOption,
    split_ratio: str = SplitRatioOption,
    batch_size: int = typer.Option(256, "--batch-size", help="Queries scored at once."),
    device: str = DeviceOption,
    tracking_uri: str | None = TrackingUriOption,
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Re-evaluate a trained model on a split of a graph from the store.

    The graph's triples are mapped into the model's vocabulary by IRI; triples
    naming an entity or relation the model does not know cannot be ranked and are
    counted as `unknown`. Rankings are filtered against every known triple (the
    graph's and the model's training triples); the result is filtered MRR,
    Hits@1/3/10 and mean rank for head, tail and both directions.
    """
    from kgserver.evaluation import evaluate_split
    from kgserver.graph import Snapshot
    from kgserver.models import load
    from kgserver.store import open_store
    from kgserver.training import resolve_device

    target_device = resolve_device(device)
    loaded = load(model, tracking_uri)
    with open_store(db) as store:
        snapshot = Snapshot.from_store(store, graph, split_ratio=_ratio(split_ratio), seed=seed)
    result = evaluate_split(
        loaded, snapshot, split.value, model_name=model, batch_size=batch_size, device=target_device
    )
    summary = {
        "model": loaded.version,
        "graph": graph,
        "split": split.value,
        "triples": result.triples,
        "unknown": result.unknown,
        "in_training": result.in_training,
        **result.metrics,
    }
    if json_output:
        echo_json(summary)
        return
    notes = f"; {result.unknown} triples with unknown entities or relations skipped" if result.unknown else ""
    if result.in_training:
        notes += f"; {result.in_training} of them were training triples of the model"
    typer.echo(
        f"{loaded.version} on {graph!r} {split.value} ({result.triples} triples): "
        f"{_metrics_line(result.metrics, '')}{notes}"
    )


class PartitionMethod(enum.StrEnum):
    metis = "metis"
    random = "random"


@app.command("partition")
def partition_command(
    graph: str = GraphOption,
    parts: int = typer.Option(..., "--parts", "-n", help="How many parts: one per machine of the distributed job."),
    out: Path = typer.Option(..., "--out", "-o", help="A new (or empty) directory for the partitions."),
    method: PartitionMethod = typer.Option(
        PartitionMethod.metis,
        "--method",
        help="metis: few edges cross parts (less remote fetching); random: fastest to compute.",
    ),
    seed: int = SeedOption,
    split_ratio: str = SplitRatioOption,
    db: str | None = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Partition a graph for DGL's distributed training (experimental).

    For a graph whose training state does not fit one machine's memory: writes the
    graph's message edges (with inverses and each edge's relation id in
    `edata["rel"]`) in `dgl.distributed`'s layout, one part per machine, beside a
    manifest (`kgserver.json`: the graph's fingerprint and the DGL graph name), the
    vocabulary and the id maps back to the snapshot's ids. DGL's launcher,
    `DistGraph` and `DistEdgeDataLoader` read it; README's "Beyond one machine's
    memory" shows the route.
    """
    from kgserver.graph import Snapshot
    from kgserver.graph.partition import check_request, write_partitions
    from kgserver.store import open_store

    check_request(parts, out, method.value)  # before reading a graph that may take minutes to load
    with open_store(db) as store:
        snapshot = Snapshot.from_store(store, graph, split_ratio=_ratio(split_ratio), seed=seed)
    partitioning = write_partitions(snapshot, parts, out, method=method.value, seed=seed)
    if json_output:
        echo_json({"graph": graph, **partitioning.summary()})
        return
    typer.echo(
        f"graph {graph!r}: {partitioning.message_edges:,} message edges over {partitioning.entities:,} entities "
        f"in {parts} {method.value} part(s) under {out} in {partitioning.seconds:.1f} s, "
        f"{partitioning.cut_edges:,} edges ({partitioning.cut_edges / partitioning.message_edges:.1%}) between parts; "
        f"DGL's partition config: {partitioning.partition_config}"
    )
