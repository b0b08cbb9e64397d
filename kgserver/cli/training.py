"""``kgserver train`` and ``kgserver evaluate``.

torch, DGL, the store and the plugins are imported inside the commands so that
``kgserver --help`` stays fast. ``train`` is a plain sequence (open the store,
snapshot the graph, build the model, train with an epoch observer, report), so
that run tracking can wrap the training step and add its observer.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console

from kgserver.cli.app import DbOption, JsonOption, app
from kgserver.cli.models import NoTrackingOption, RegisterAsOption, TrackingUriOption
from kgserver.errors import ConfigurationError

if TYPE_CHECKING:
    from torch import Tensor

    from kgserver.graph import Snapshot
    from kgserver.registry import Hyperparameters, KGModel
    from kgserver.training import TrainResult


class ModeChoice(str, enum.Enum):
    auto = "auto"
    full = "full"
    sampled = "sampled"


class SplitChoice(str, enum.Enum):
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
HEADLINE = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "mean_rank")


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
    max_minutes: Optional[float] = typer.Option(
        None, "--max-minutes", help="Time budget; training stops cleanly and keeps the best checkpoint."
    ),
    mode: ModeChoice = typer.Option(
        ModeChoice.auto,
        "--mode",
        help="full: encode the whole graph each step; sampled: neighbour-sampled mini-batches; "
        "auto: full when the estimated memory fits.",
    ),
    patience: int = typer.Option(5, "--patience", help="Evaluations without a better validation MRR before stopping."),
    eval_every: int = typer.Option(5, "--eval-every", help="Evaluate on the validation split every N epochs."),
    lr_decay: float = typer.Option(
        0.5, "--lr-decay", help="Multiply the learning rate by this after an evaluation without improvement (1: never)."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    split_ratio: str = SplitRatioOption,
    tracking_uri: Optional[str] = TrackingUriOption,
    register_as: Optional[str] = RegisterAsOption,
    no_tracking: bool = NoTrackingOption,
    db: Optional[str] = DbOption,
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
    """
    from kgserver.graph import Snapshot
    from kgserver.registry import get_model
    from kgserver.store import open_store
    from kgserver.training import Observers, TrainConfig, resolve_device, seed_everything, train

    resolve_device(device)  # an unusable device fails before any work is done
    config = TrainConfig(
        epochs=epochs,
        seed=seed,
        device=device,
        max_minutes=max_minutes,
        patience=patience,
        eval_every=eval_every,
        lr_decay=lr_decay,
        mode=mode.value,
        threads=threads,
    )
    model_class = get_model(model)
    hparams = _hyperparameters(model_class, assignments)
    with open_store(db) as store:
        snapshot = Snapshot.from_store(store, graph, split_ratio=_ratio(split_ratio), seed=seed)
    seed_everything(seed)
    network = model_class(snapshot.num_entities, snapshot.num_relations, hparams)
    if no_tracking:
        from kgserver.tracking import save_untracked

        with _epoch_progress(config.epochs) as progress:
            result = train(network, snapshot, config, observer=progress)
        path = save_untracked(result.model, snapshot, register_as or f"{snapshot.name}-{model}")
        _note(f"tracking off (--no-tracking): model bundle saved to {path}")
        _report(result, snapshot, model, json_output, {"bundle_path": str(path)})
        return
    from kgserver.tracking import TrainingRun

    run = TrainingRun.start(network, snapshot, config, tracking_uri=tracking_uri, register_as=register_as)
    with run, _epoch_progress(config.epochs) as progress:
        result = train(network, snapshot, config, observer=Observers(progress, run))
        version = run.finish(result)
    _note(f"registered model version {version} (MLflow run {run.run_id}); browse it with `kgserver ui`")
    _report(result, snapshot, model, json_output, {"registered_version": version, "run_id": run.run_id})


def _note(message: str) -> None:
    """A status line on stderr, so stdout holds only the result (or its JSON)."""
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)


def _hyperparameters(model_class: type[KGModel], assignments: list[str]) -> Hyperparameters:
    """Parse ``--set`` values with the plugin's types; a bad one is a configuration error."""
    try:
        return model_class.hyperparameters.parse_assignments(assignments)
    except (ValueError, TypeError) as error:
        raise ConfigurationError(f"--set for model {model_class.name!r}: {error}") from error


def _ratio(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(part) for part in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise ConfigurationError(f"--split-ratio expects three numbers like 0.8,0.1,0.1, got {text!r}")
    return parts  # type: ignore[return-value]


class _EpochLines:
    """Epoch observer for logs: one plain line per epoch on stderr."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

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
        TextColumn("valid MRR {task.fields[mrr]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        yield _EpochBar(progress, progress.add_task("train", total=epochs, loss="-", mrr="-"))


def _report(
    result: TrainResult, snapshot: Snapshot, model: str, json_output: bool, saved: dict[str, str]
) -> None:
    summary = {"graph": snapshot.name, "model": model, **result.summary(), **saved}
    if json_output:
        typer.echo(json.dumps(summary))
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
        f"{metrics[prefix + 'hits_at_1']:.4f}/{metrics[prefix + 'hits_at_3']:.4f}/{metrics[prefix + 'hits_at_10']:.4f}, "
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
    tracking_uri: Optional[str] = TrackingUriOption,
    db: Optional[str] = DbOption,
    json_output: bool = JsonOption,
) -> None:
    """Re-evaluate a trained model on a split of a graph from the store.

    The graph's triples are mapped into the model's vocabulary by IRI; triples
    naming an entity or relation the model does not know cannot be ranked and are
    counted as `unknown`. Rankings are filtered against every known triple (the
    graph's and the model's training triples); the result is filtered MRR,
    Hits@1/3/10 and mean rank for head, tail and both directions.
    """
    import torch

    from kgserver.evaluation import Evaluator
    from kgserver.graph import Snapshot
    from kgserver.models import load
    from kgserver.store import open_store
    from kgserver.training import resolve_device

    target_device = resolve_device(device)
    loaded = load(model, tracking_uri)
    with open_store(db) as store:
        snapshot = Snapshot.from_store(store, graph, split_ratio=_ratio(split_ratio), seed=seed)
    to_model = _vocabulary_map(snapshot, loaded.entities, loaded.relations)
    wanted, unknown = _map_triples(getattr(snapshot, split.value), *to_model)
    if len(wanted) == 0:
        raise ConfigurationError(
            f"none of the {unknown} {split.value} triples of graph {graph!r} is in the vocabulary of model {model!r}"
        )
    known_parts = [_map_triples(part, *to_model)[0] for part in (snapshot.train, snapshot.valid, snapshot.test)]
    known = torch.cat([loaded.train_triples, *known_parts])
    evaluator = Evaluator(
        known, len(loaded.entities), len(loaded.relations), batch_size=batch_size, device=target_device
    )
    network = loaded.model.to(target_device)
    metrics = evaluator(network, loaded.graph().to(target_device), wanted)
    in_training = int(_contained(wanted, loaded.train_triples).sum())
    summary = {
        "model": loaded.version,
        "graph": graph,
        "split": split.value,
        "triples": len(wanted),
        "unknown": unknown,
        "in_training": in_training,
        **metrics,
    }
    if json_output:
        typer.echo(json.dumps(summary))
        return
    notes = f"; {unknown} triples with unknown entities or relations skipped" if unknown else ""
    if in_training:
        notes += f"; {in_training} of them were training triples of the model"
    typer.echo(f"{loaded.version} on {graph!r} {split.value} ({len(wanted)} triples): {_metrics_line(metrics, '')}{notes}")


def _vocabulary_map(snapshot: Snapshot, entities: list[str], relations: list[str]) -> tuple[Tensor, Tensor]:
    """Snapshot id -> model id (-1 where the model does not know the IRI), for entities and relations."""
    import torch

    entity_ids = {iri: index for index, iri in enumerate(entities)}
    relation_ids = {iri: index for index, iri in enumerate(relations)}
    return (
        torch.tensor([entity_ids.get(iri, -1) for iri in snapshot.entities], dtype=torch.long),
        torch.tensor([relation_ids.get(iri, -1) for iri in snapshot.relations], dtype=torch.long),
    )


def _map_triples(triples: Tensor, entity_map: Tensor, relation_map: Tensor) -> tuple[Tensor, int]:
    """``triples`` in model ids, without those the model cannot rank, and how many those were."""
    import torch

    mapped = torch.stack(
        [entity_map[triples[:, 0]], relation_map[triples[:, 1]], entity_map[triples[:, 2]]], dim=1
    )
    keep = (mapped >= 0).all(dim=1)
    return mapped[keep], int((~keep).sum())


def _contained(triples: Tensor, reference: Tensor) -> Tensor:
    """Which rows of ``triples`` also occur in ``reference`` (both ``[n, 3]`` id tensors)."""
    import torch

    if len(reference) == 0:
        return torch.zeros(len(triples), dtype=torch.bool)
    span = int(torch.cat([triples, reference]).max()) + 1

    def keys(t: Tensor) -> Tensor:
        return (t[:, 0] * span + t[:, 1]) * span + t[:, 2]

    return torch.isin(keys(triples), keys(reference))
