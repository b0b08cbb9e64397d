"""The training loop: optimise, validate every few epochs, keep the best, stop early.

One loop serves every objective and mode: a batch source (full-graph 1-N,
full-graph negatives, or neighbour-sampled edges) yields one loss per batch and
the loop does the Adam step with gradient clipping. Validation always encodes
the full graph without gradients. The best state (by validation MRR) is copied
in memory and loaded back at the end, before the final valid and test metrics.

With several ranks (:mod:`kgserver.training.distributed`) every rank runs the
loop on its share of each batch; rank 0 alone validates, keeps the checkpoint,
decides and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import torch
from torch import Tensor

from kgserver.evaluation import Evaluator
from kgserver.graph import Snapshot
from kgserver.registry import KGModel
from kgserver.training.config import Observer, StepObserver, TrainConfig, TrainResult
from kgserver.training.distributed import SINGLE, Ranks
from kgserver.training.full import FullGraphNegatives, FullGraphOneToN
from kgserver.training.losses import Objective
from kgserver.training.mode import choose_mode, fanouts_for
from kgserver.training.runtime import (
    cpu_threads,
    deterministic_algorithms,
    resolve_device,
    retain_freed_memory,
    seed_everything,
)
from kgserver.training.sampled import SampledEdges
from kgserver.training.step import Step

VALID_KEYS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10")


class BatchSource(Protocol):
    def steps(self) -> int: ...

    def batches(self) -> Iterator[Step]: ...


class BestCheckpoint:
    """The best validation MRR so far, its epoch and a copy of the model's state."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.mrr = float("-inf")
        self.epoch = 0
        self.state: dict[str, Tensor] | None = None
        self.evaluations_since_best = 0

    def update(self, mrr: float, epoch: int, model: KGModel) -> None:
        if mrr > self.mrr:
            self.mrr, self.epoch, self.evaluations_since_best = mrr, epoch, 0
            self.state = {key: value.detach().clone() for key, value in model.state_dict().items()}
        else:
            self.evaluations_since_best += 1

    @property
    def exhausted(self) -> bool:
        return self.evaluations_since_best >= self.patience


def train(model: KGModel, snapshot: Snapshot, config: TrainConfig, observer: Observer | None = None) -> TrainResult:
    """Train ``model`` on ``snapshot``'s training triples; see :class:`TrainConfig`.

    Seeds every random source from ``config.seed`` first (seed before building
    the model too, with :func:`seed_everything`, for repeatable initialisation)
    and runs with torch's deterministic kernels, so a seed repeats its metrics.
    Freed memory stays in the process for reuse (:func:`retain_freed_memory`).
    """
    result = train_rank(model, snapshot, config, observer, SINGLE)
    if result is None:  # rank 0 of one always has the result
        raise RuntimeError("single-process training returned no result")
    return result


def train_rank(
    model: KGModel, snapshot: Snapshot, config: TrainConfig, observer: Observer | None, ranks: Ranks
) -> TrainResult | None:
    """:func:`train` as one rank of a data-parallel job (the process group must be up).

    Every rank must pass the same model (same seed), snapshot and config; rank 0
    gets the result, the others None. ``observer`` is called on rank 0 only.
    """
    retain_freed_memory()
    with deterministic_algorithms(), cpu_threads(config.threads):
        return _train(model, snapshot, config, observer, ranks)


def _train(
    model: KGModel, snapshot: Snapshot, config: TrainConfig, observer: Observer | None, ranks: Ranks
) -> TrainResult | None:
    started = time.monotonic()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model.to(device)
    graph = snapshot.message_graph().to(device)
    mode = choose_mode(model, graph.num_edges(), config, device)
    source = _batch_source(model, graph, snapshot, config, mode, generator, ranks)
    step_loss = ranks.forward(model)
    evaluator = Evaluator(
        torch.cat([snapshot.train, snapshot.valid, snapshot.test]),
        snapshot.num_entities,
        snapshot.num_relations,
        batch_size=config.eval_batch_size,
        device=device,
    )
    validation = validation_triples(snapshot.valid, config.valid_limit, config.seed)
    sparse = model.enable_sparse_gradients() if mode == "sampled" and not ranks.distributed else frozenset()
    optimizer = Optimizers(model, sparse)
    deadline = started + config.max_minutes * 60 if config.max_minutes is not None else float("inf")
    best = BestCheckpoint(config.patience)
    history: list[dict[str, float]] = []
    stop_reason = "epochs"
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.monotonic()
        model.train()
        progress = _StepProgress(observer if ranks.is_main else None, epoch, source.steps())
        loss, completed = _run_epoch(model, step_loss, source, optimizer, config, device, deadline, ranks, progress)
        learning_rate, stop = optimizer.param_groups[0]["lr"], None
        if ranks.is_main:
            record: dict[str, float] = {
                "epoch": epoch,
                "loss": loss,
                "epoch_seconds": time.monotonic() - epoch_started,
                "learning_rate": learning_rate,
                "epoch_fraction": progress.fraction,
            }
            out_of_time = not completed or time.monotonic() >= deadline
            if epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time:
                valid = evaluator(model, graph, validation)
                record.update({f"valid_{key}": valid[key] for key in VALID_KEYS})
                best.update(valid["mrr"], epoch, model)
                if best.evaluations_since_best and best.evaluations_since_best % config.lr_patience == 0:
                    learning_rate *= config.lr_decay
            history.append(record)
            if observer is not None:
                observer.on_epoch_end(epoch, {key: value for key, value in record.items() if key != "epoch"})
            stop = "max_minutes" if out_of_time else "early_stopping" if best.exhausted else None
        learning_rate, stop = ranks.decision(learning_rate, stop)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate
        if stop is not None:
            stop_reason = stop
            break
    if not ranks.is_main:
        return None
    if best.state is None:  # the last epoch run is always evaluated, so this cannot happen
        raise RuntimeError("training ended without a validation checkpoint")
    model.load_state_dict(best.state)
    model.eval()
    final = evaluator.splits(model, graph, {"test": snapshot.test, "valid": validation})
    metrics = {f"{split}_{key}": value for split, values in final.items() for key, value in values.items()}
    metrics.update(epochs=len(history), seconds=time.monotonic() - started)
    return TrainResult(
        model=model,
        metrics=metrics,
        history=history,
        best_epoch=best.epoch,
        mode=mode,
        stop_reason=stop_reason,
        config=config,
        last_epoch_complete=completed,
    )


class Optimizers:
    """Adam over the model's parameters, except SparseAdam over the ``sparse`` ones (those
    :meth:`~kgserver.registry.KGModel.enable_sparse_gradients` names in sampled training), whose
    gradients hold only the rows a step touched."""

    def __init__(self, model: KGModel, sparse: frozenset[str]) -> None:
        named = dict(model.named_parameters())
        unknown = sparse - set(named)
        if unknown:
            raise ValueError(f"model {model.name!r} names sparse parameters it does not have: {sorted(unknown)}")
        hparams = model.hparams
        self.parameters = list(named.values())
        dense = [parameter for name, parameter in named.items() if name not in sparse]
        self.optimizers: list[torch.optim.Optimizer] = [
            torch.optim.Adam(dense, lr=hparams.learning_rate, weight_decay=hparams.weight_decay)
        ]
        if sparse:
            tables = [named[name] for name in sorted(sparse)]
            self.optimizers.append(torch.optim.SparseAdam(tables, lr=hparams.learning_rate))

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def clip_grad_norm(self, max_norm: float) -> None:
        """``torch.nn.utils.clip_grad_norm_`` for dense and sparse gradients together."""
        grads = [parameter.grad for parameter in self.parameters if parameter.grad is not None]
        norms = [(grad.coalesce().values() if grad.is_sparse else grad).norm() for grad in grads]
        if not norms:
            return
        scale = max_norm / (torch.stack(norms).norm() + 1e-6)
        if scale < 1:
            for grad in grads:
                grad.mul_(scale)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


class _StepProgress:
    """Counts an epoch's steps and tells a :class:`~kgserver.training.config.StepObserver`."""

    def __init__(self, observer: Observer | None, epoch: int, steps: int) -> None:
        self.observer = observer if isinstance(observer, StepObserver) else None
        self.epoch, self.steps, self.done = epoch, steps, 0

    @property
    def fraction(self) -> float:
        return self.done / self.steps if self.steps else 1.0

    def step_done(self) -> None:
        self.done += 1
        if self.observer is not None:
            self.observer.on_step(self.epoch, self.done, self.steps)


def validation_triples(valid: Tensor, limit: int | None, seed: int) -> Tensor:
    """``valid``, or a sample of ``limit`` of its rows fixed by ``seed`` when it has more."""
    if limit is None or len(valid) <= limit:
        return valid
    order = torch.randperm(len(valid), generator=torch.Generator().manual_seed(seed))
    return valid[order[:limit].sort().values]


def _batch_source(
    model: KGModel,
    graph: object,
    snapshot: Snapshot,
    config: TrainConfig,
    mode: str,
    generator: torch.Generator,
    ranks: Ranks,
) -> BatchSource:
    hparams = model.hparams
    objective = Objective(hparams.loss, hparams.label_smoothing, model.num_entities)
    if mode == "sampled":
        return SampledEdges(
            model,
            graph,
            fanouts=fanouts_for(model, config),
            batch_size=hparams.batch_size,
            num_negatives=hparams.num_negatives,
            negative_pool=config.negative_pool,
            objective=objective,
            world_size=ranks.world_size,
        )
    if model.training_mode == "negatives":
        return FullGraphNegatives(
            model,
            graph,
            snapshot.train,
            batch_size=hparams.batch_size,
            num_negatives=hparams.num_negatives,
            objective=objective,
            generator=generator,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )
    if model.training_mode != "1-n":
        raise ValueError(f"model {model.name!r} declares unknown training_mode {model.training_mode!r}")
    return FullGraphOneToN(
        model,
        graph,
        snapshot.train,
        batch_size=hparams.batch_size,
        objective=objective,
        generator=generator,
    )


def _run_epoch(
    model: KGModel,
    step_loss: Callable[[Callable[[], Tensor] | None], Tensor],
    source: BatchSource,
    optimizer: Optimizers,
    config: TrainConfig,
    device: torch.device,
    deadline: float,
    ranks: Ranks,
    progress: _StepProgress,
) -> tuple[float, bool]:
    """Mean loss over the epoch's batches, and whether it finished before ``deadline``.

    Each rank's loss is a mean over its share; scaled by that share of the
    step's normaliser (times the number of ranks, which DDP's averaging
    divides out again) it gives gradients equal to one process's over the
    whole batch. Rank 0's clock decides the deadline, checked before each step
    after the first, so that every rank stops at the same step.

    With ``config.precision`` "bf16" each step's forward pass runs under
    ``torch.autocast``, entered anew for every step: autocast keeps its bfloat16
    copies of the weights until it exits, and they must not outlive an optimizer step.
    """
    total, count = 0.0, 0
    for step in source.batches():
        late = count > 0 and time.monotonic() >= deadline
        weight, size, stop = ranks.step_totals(step.weight, step.size, late)
        if stop:
            return ranks.total(total) / count, False
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
            loss = step_loss(step.loss)
        share = step.weight / weight
        (loss * (share * ranks.world_size) if ranks.distributed else loss).backward()
        optimizer.clip_grad_norm(config.grad_clip)
        optimizer.step()
        total += loss.item() * share * size
        count += size
        progress.step_done()
    return ranks.total(total) / count, True
