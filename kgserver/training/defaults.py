"""Size-aware defaults: the settings ``kgserver train`` picks from the graph's size and the machine.

The plugins' defaults were tuned on CoDEx-S (2,034 entities, 32,888 training
triples), and on a graph of that size :func:`size_defaults` keeps every one of
them. On larger graphs some settings must change: full-graph training encodes
the whole graph at every step, so at CoDEx-S's batch an epoch of a graph eight
times larger encodes it eight times as often; evaluating every 5 epochs is rare
when an epoch takes minutes; a million entities at dimension 512 do not fit
memory with their Adam state. :data:`RULES` says how each setting is chosen (``kgserver models
available`` shows it); the memory estimates are :mod:`kgserver.training.mode`'s.

Only what the user left open is chosen (``--set`` for hyperparameters, the
options of ``kgserver train`` for the run), each with a reason that the command
prints and records in the MLflow run. Nothing here reads the machine:
:class:`Machine` is passed in, so the rules are testable at any size;
:meth:`Machine.of_this_process` is what the command passes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kgserver.errors import ConfigurationError
from kgserver.registry import Hyperparameters, KGModel
from kgserver.training.config import TrainConfig
from kgserver.training.mode import (
    ACTIVATION_SHARE,
    BYTES_PER_PARAMETER,
    BYTES_PER_SCORE,
    full_graph_bytes,
    mode_for,
    parameter_bytes,
    score_bytes,
)

if TYPE_CHECKING:
    import torch

    from kgserver.graph import Snapshot
    from kgserver.training.distributed import Ranks

# CoDEx-S, where the plugins' defaults were tuned.
REFERENCE_NAME = "CoDEx-S"
REFERENCE_ENTITIES = 2_034
REFERENCE_TRIPLES = 32_888
PARAMETER_SHARE = 0.25  # of memory, for the embedding tables' training state
SCORE_SHARE = 0.125  # of memory, for a step's score matrices
DIM_MULTIPLE = 32
SMALL_DIM_MULTIPLE = 8
FREQUENT_LR_PATIENCE = 2  # evaluations without improvement per decay when validation is more frequent
VALID_SCORES = 2**32  # validation triples x entities one evaluation may score (about 17x FB15k-237's)
BF16_MIN_SPEEDUP = 1.5  # bfloat16 matrix products must be this much faster than float32 to be chosen

_RUN_DEFAULTS = TrainConfig()
RULES = {
    "embedding_dim": (
        "the plugin's default, unless the embedding tables' training state (weight, gradient, two Adam moments "
        f"and the best checkpoint: {BYTES_PER_PARAMETER} bytes per number) would exceed {PARAMETER_SHARE:.0%} of "
        f"memory; then the largest multiple of {DIM_MULTIPLE} that fits"
    ),
    "mode": (
        f"--mode auto: full-graph when a step's estimated activations fit {ACTIVATION_SHARE:.0%} of memory, "
        "else neighbour-sampled"
    ),
    "batch_size": (
        f"full-graph: the default x 2^k, the largest k >= 0 with training triples >= 2^k x {2 * REFERENCE_TRIPLES:,} "
        f"(twice {REFERENCE_NAME}'s), since every step encodes the whole graph; sampled: the default; then halved "
        f"while a step's scores (batch x candidates x {BYTES_PER_SCORE} bytes) exceed {SCORE_SHARE:.1%} of memory; "
        "a batch_size set with --set is kept, with a warning when its scores exceed that"
    ),
    "eval_every": (
        f"--eval-every: {_RUN_DEFAULTS.eval_every} x {REFERENCE_TRIPLES * REFERENCE_ENTITIES:,} ({REFERENCE_NAME}'s "
        "training triples x entities) / (training triples x candidates per query: all entities in full-graph "
        f"1-N training), rounded down, within [1, {_RUN_DEFAULTS.eval_every}]: validation after about the work of "
        f"{_RUN_DEFAULTS.eval_every} {REFERENCE_NAME} epochs; --patience and --lr-decay count evaluations and follow"
    ),
    "lr_patience": (
        f"--lr-patience: {_RUN_DEFAULTS.lr_patience} (every evaluation without improvement decays the learning "
        f"rate) when validation comes every {_RUN_DEFAULTS.eval_every} epochs or less often; {FREQUENT_LR_PATIENCE} "
        "when it comes more often, since evaluations an epoch apart differ by little more than their noise"
    ),
    "valid_limit": (
        f"--valid-limit: all validation triples while they times the entities are at most {VALID_SCORES:,} "
        "(each evaluation scores every validation query against every entity); else that many divided by the "
        "entities, a sample fixed by --seed; the test split is always evaluated whole"
    ),
    "eval_batch_size": (
        f"{_RUN_DEFAULTS.eval_batch_size}, halved while its scores against every entity ({BYTES_PER_SCORE} bytes "
        f"each) exceed {SCORE_SHARE:.1%} of memory"
    ),
    "threads": "--threads: the machine's physical cores divided by the job's processes on it",
    "precision": (
        "--precision auto: bf16 (matrix products of each training step in bfloat16, float32 accumulation, "
        f"parameters and evaluation in float32) when the plugin declares trains_in_bf16 and the device "
        f"multiplies bfloat16 matrices at least {BF16_MIN_SPEEDUP}x faster than float32 ones, measured when "
        "training starts; else fp32"
    ),
}


@dataclass(frozen=True)
class GraphSize:
    """The sizes the defaults depend on."""

    entities: int
    relations: int
    train_triples: int
    valid_triples: int = 0

    @classmethod
    def of(cls, snapshot: Snapshot) -> GraphSize:
        return cls(snapshot.num_entities, snapshot.num_relations, len(snapshot.train), len(snapshot.valid))


@dataclass(frozen=True)
class Machine:
    """What one training process has of the machine: bytes of memory, CPU cores, and how many
    times faster than float32 its device multiplies bfloat16 matrices (below 1: emulated)."""

    memory_bytes: int
    cores: int
    bf16_speedup: float = 1.0

    @classmethod
    def of_this_process(cls, device: torch.device, ranks: Ranks, *, probe_bf16: bool = True) -> Machine:
        """This process's share: the device's memory (on the CPU the machine's, shared by the
        job's processes on it) and the machine's physical cores divided among those processes,
        and (``probe_bf16``) the measured bfloat16 speed-up; without the probe it is left at 1.

        Every rank must choose the same model, so ranks that may see different memory (on
        other machines, or on GPUs) agree on the smallest share any of them has, and all ranks
        on the smallest speed-up any of them measured (a collective: every rank must probe).
        """
        import psutil

        from kgserver.training.mode import device_memory

        memory = device_memory(device)
        if device.type == "cpu":
            memory //= ranks.local_world_size
        if device.type != "cpu" or ranks.local_world_size < ranks.world_size:
            memory = int(ranks.minimum(memory))
        # psutil cannot tell physical cores on some platforms (None); the logical count is then all there is
        cores = max(1, (psutil.cpu_count(logical=False) or os.cpu_count() or 1) // ranks.local_world_size)
        if not probe_bf16:
            return cls(memory, cores)
        return cls(memory, cores, ranks.minimum(bf16_matmul_speedup(device, cores)))


def bf16_matmul_speedup(device: torch.device, threads: int) -> float:
    """float32 time / bfloat16 time of one ``[512, 512] x [512, 4096]`` product on ``device``, best of 3.

    CPUs with bfloat16 dot-product instructions (AVX512-BF16, AMX) run it several
    times faster; CPUs without them convert and are slower, so it is measured
    rather than looked up. About 20 ms on a CPU core.
    """
    import time

    import torch

    from kgserver.training.runtime import cpu_threads

    def seconds(dtype: torch.dtype) -> float:
        left = torch.randn(512, 512, device=device).to(dtype)
        right = torch.randn(512, 4096, device=device).to(dtype)
        timings = []
        for _ in range(4):
            started = time.perf_counter()
            left @ right
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timings.append(time.perf_counter() - started)
        return min(timings[1:])

    with cpu_threads(threads if device.type == "cpu" else None):
        try:
            return seconds(torch.float32) / seconds(torch.bfloat16)
        except RuntimeError:  # a device without bfloat16 matrix products
            return 0.0


@dataclass(frozen=True)
class Choice:
    """A value chosen by size, and why (one line, for the terminal and the MLflow run)."""

    value: Any
    reason: str


@dataclass(frozen=True)
class SizeDefaults:
    """The plugin's hyperparameters and the run's config with the chosen values, and the choices."""

    hyperparameters: Hyperparameters
    config: TrainConfig
    chosen_hyperparameters: dict[str, Choice]
    chosen_config: dict[str, Choice]
    # what the user set that the rules would not have chosen, and why it may not fit
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """One line per choice: ``name = value (reason)``."""
        chosen = {**self.chosen_hyperparameters, **self.chosen_config}
        return [f"{name} = {choice.value} ({choice.reason})" for name, choice in chosen.items()]


def size_defaults(
    graph: GraphSize,
    machine: Machine,
    model_class: type[KGModel],
    assigned: Mapping[str, Any],
    config: TrainConfig,
    explicit: Collection[str],
) -> SizeDefaults:
    """Choose the size-dependent settings the user left open, by :data:`RULES`.

    ``assigned`` are the user's hyperparameter values (``--set``, valid for the
    plugin's schema), which are never changed; ``config`` is the run's config and
    ``explicit`` the names of its fields the user gave (``mode`` "auto" is always
    open to a choice). Raises
    :class:`~kgserver.errors.ConfigurationError` when the vocabulary's embedding
    tables cannot fit even at dimension 8, or when the plugin rejects a chosen value
    together with the user's (say a ConvE height that does not divide the dimension).
    """
    schema = model_class.hyperparameters
    given = schema(**assigned)
    hyperparameters: dict[str, Choice] = {}
    run: dict[str, Choice] = {}
    memory = machine.memory_bytes
    dim = given.embedding_dim
    if "embedding_dim" not in assigned:
        hyperparameters["embedding_dim"] = _embedding_dim(graph, memory, dim)
        dim = hyperparameters["embedding_dim"].value
    mode = config.mode
    if mode == "auto":
        run["mode"] = _mode(graph, memory, dim, given.num_layers)
        mode = run["mode"].value
    batch_size = given.batch_size
    warnings: list[str] = []
    if "batch_size" not in assigned:
        hyperparameters["batch_size"] = _batch_size(
            graph, memory, given, mode, model_class.training_mode, config.negative_pool
        )
        batch_size = hyperparameters["batch_size"].value
    else:
        warnings.extend(_oversized_batch(graph, memory, given, mode, model_class.training_mode, config.negative_pool))
    if "eval_every" not in explicit:
        candidates = _candidates(
            graph, mode, model_class.training_mode, batch_size, given.num_negatives, config.negative_pool
        )
        run["eval_every"] = _eval_every(graph, candidates, config.eval_every)
    if "lr_patience" not in explicit:
        eval_every = run["eval_every"].value if "eval_every" in run else config.eval_every
        run["lr_patience"] = _lr_patience(eval_every, config.lr_patience)
    if "valid_limit" not in explicit and graph.valid_triples * graph.entities > VALID_SCORES:
        limit = VALID_SCORES // graph.entities
        run["valid_limit"] = Choice(
            limit,
            f"a sample of {limit:,} of the {graph.valid_triples:,} validation triples: scoring all of them against "
            f"{graph.entities:,} entities at every evaluation would be {_times(graph.valid_triples / limit)} the work",
        )
    if "eval_batch_size" not in explicit:
        run["eval_batch_size"] = _eval_batch_size(graph, memory, config.eval_batch_size)
    if "threads" not in explicit:
        run["threads"] = Choice(machine.cores, f"the {machine.cores} physical core(s) this process has")
    if "precision" not in explicit:
        run["precision"] = _precision(machine.bf16_speedup, model_class)
    elif config.precision == "bf16" and not model_class.trains_in_bf16:
        raise ConfigurationError(
            f"model {model_class.name!r} does not declare that it trains under bfloat16 autocast "
            "(the contract's trains_in_bf16); use --precision fp32 or auto"
        )
    try:
        chosen = schema(**{**assigned, **{name: choice.value for name, choice in hyperparameters.items()}})
    except (ValueError, TypeError) as error:
        raise ConfigurationError(
            f"model {model_class.name!r} rejects the size-aware "
            f"{', '.join(f'{name}={choice.value}' for name, choice in hyperparameters.items())} "
            f"with the --set values: {error}; --set these too"
        ) from error
    config = dataclasses.replace(config, **{name: choice.value for name, choice in run.items()})
    return SizeDefaults(chosen, config, hyperparameters, run, tuple(warnings))


def _embedding_dim(graph: GraphSize, memory: int, default: int) -> Choice:
    budget = int(memory * PARAMETER_SHARE)
    needed = parameter_bytes(graph.entities, graph.relations, default)
    if needed <= budget:
        return Choice(
            default,
            f"the default: the embedding tables' training state, {_gib(needed)}, fits a quarter of memory, "
            f"{_gib(budget)}",
        )
    fit = budget // parameter_bytes(graph.entities, graph.relations, 1)
    multiple = DIM_MULTIPLE if fit >= DIM_MULTIPLE else SMALL_DIM_MULTIPLE
    dim = fit // multiple * multiple
    if dim < SMALL_DIM_MULTIPLE:
        raise ConfigurationError(
            f"{graph.entities:,} entities need {_gib(parameter_bytes(graph.entities, graph.relations, 8))} for "
            f"their embedding tables' training state even at embedding_dim 8, more than a quarter of the "
            f"{_gib(memory)} of memory this training has; --set embedding_dim to train anyway"
        )
    return Choice(
        dim,
        f"lowered from {default}: {graph.entities:,} entities' embedding tables would need {_gib(needed)} of "
        f"training state, more than a quarter of memory ({_gib(budget)}); at {dim}: "
        f"{_gib(parameter_bytes(graph.entities, graph.relations, dim))}",
    )


def _mode(graph: GraphSize, memory: int, dim: int, layers: int) -> Choice:
    budget = int(memory * ACTIVATION_SHARE)
    edges = 2 * graph.train_triples
    needed = full_graph_bytes(edges, graph.entities, dim, layers)
    mode = mode_for(edges, graph.entities, dim, layers, budget)
    relation = "fit" if mode == "full" else "exceed"
    return Choice(
        mode, f"a full-graph step's activations, about {_gib(needed)}, {relation} half of memory, {_gib(budget)}"
    )


def _batch_size(
    graph: GraphSize, memory: int, given: Hyperparameters, mode: str, training_mode: str, negative_pool: int
) -> Choice:
    default = given.batch_size
    factor = 1
    if mode == "full":
        while graph.train_triples >= 2 * REFERENCE_TRIPLES * factor * 2:
            factor *= 2
    batch = default * factor
    if factor > 1:
        reason = (
            f"{factor}x the default {default}: {graph.train_triples:,} training triples are "
            f"{_times(graph.train_triples / REFERENCE_TRIPLES)} {REFERENCE_NAME}'s, and full-graph training "
            f"encodes the whole graph at every step; an epoch keeps 2-4x {REFERENCE_NAME}'s number of steps"
        )
    elif mode == "full":
        reason = f"the default: {graph.train_triples:,} training triples, under 4x {REFERENCE_NAME}'s"
    else:
        reason = "the default: sampled steps do not encode the whole graph"
    budget = int(memory * SCORE_SHARE)
    scaled = batch
    scores = _step_scores(graph, given, mode, training_mode, negative_pool)
    batch = _fitting(batch, scores, budget)
    if batch < scaled:
        reason += (
            f"; halved to {batch} so that a step's score matrices, {_gib(scores(batch))}, fit an eighth of "
            f"memory, {_gib(budget)}"
        )
    return Choice(batch, reason)


def _oversized_batch(
    graph: GraphSize, memory: int, given: Hyperparameters, mode: str, training_mode: str, negative_pool: int
) -> list[str]:
    """A warning when the user's ``batch_size`` gives score matrices above the share of memory
    the rule keeps them to (the rule would have halved it): such a step can exhaust memory."""
    budget = int(memory * SCORE_SHARE)
    scores = _step_scores(graph, given, mode, training_mode, negative_pool)
    if scores(given.batch_size) <= budget:
        return []
    return [
        f"batch_size = {given.batch_size} (set): a step's score matrices, about {_gib(scores(given.batch_size))}, "
        f"exceed an eighth of memory, {_gib(budget)}, and training keeps freed memory for reuse, so the process "
        f"can grow to twice a step's size or more; {_fitting(given.batch_size, scores, budget)} fits"
    ]


def _step_scores(
    graph: GraphSize, given: Hyperparameters, mode: str, training_mode: str, negative_pool: int
) -> Callable[[int], int]:
    """Estimated bytes of a step's score matrices, by batch size."""

    def scores(size: int) -> int:
        return score_bytes(size, _candidates(graph, mode, training_mode, size, given.num_negatives, negative_pool))

    return scores


def _fitting(batch: int, scores: Callable[[int], int], budget: int) -> int:
    """``batch``, halved until its score matrices fit ``budget`` bytes (at least 1)."""
    while batch > 1 and scores(batch) > budget:
        batch //= 2
    return batch


def _candidates(
    graph: GraphSize, mode: str, training_mode: str, batch_size: int, num_negatives: int, negative_pool: int
) -> int:
    """Entities each training query is scored against: all of them (full-graph 1-N), else the batch's
    true tails and its sampled ones (each distinct candidate is scored once per batch): per-query
    negatives in full-graph steps, a shared pool in sampled ones."""
    if mode == "full":
        if training_mode == "1-n":
            return graph.entities
        return min(graph.entities, batch_size * (num_negatives + 1))
    return min(graph.entities, batch_size + negative_pool)


def _eval_every(graph: GraphSize, candidates: int, default: int) -> Choice:
    work = graph.train_triples * candidates
    reference = REFERENCE_TRIPLES * REFERENCE_ENTITIES
    every = max(1, min(default, default * reference // max(1, work)))
    epoch = f"an epoch scores {graph.train_triples:,} training triples x {candidates:,} candidates"
    if every == default:
        return Choice(every, f"the default: {epoch}, no more work than a {REFERENCE_NAME} epoch")
    return Choice(
        every,
        f"{epoch}, {_times(work / reference)} the work of a {REFERENCE_NAME} epoch: validation every {every} "
        f"epoch(s) instead of {default}",
    )


def _lr_patience(eval_every: int, default: int) -> Choice:
    if eval_every >= _RUN_DEFAULTS.eval_every:
        return Choice(default, f"the default: validation every {eval_every} epochs")
    return Choice(
        max(default, FREQUENT_LR_PATIENCE),
        f"validation every {eval_every} epoch(s), more often than every {_RUN_DEFAULTS.eval_every}: the learning "
        f"rate decays after every {max(default, FREQUENT_LR_PATIENCE)} evaluations without improvement",
    )


def _eval_batch_size(graph: GraphSize, memory: int, default: int) -> Choice:
    budget = int(memory * SCORE_SHARE)
    size = default
    while size > 1 and score_bytes(size, graph.entities) > budget:
        size //= 2
    if size == default:
        return Choice(size, f"the default: its scores against {graph.entities:,} entities fit an eighth of memory")
    return Choice(
        size,
        f"halved from {default} so that scoring against {graph.entities:,} entities, "
        f"{_gib(score_bytes(size, graph.entities))}, fits an eighth of memory, {_gib(budget)}",
    )


def _precision(speedup: float, model_class: type[KGModel]) -> Choice:
    if not model_class.trains_in_bf16:
        return Choice("fp32", f"model {model_class.name!r} does not declare trains_in_bf16")
    if speedup <= 0:
        return Choice("fp32", "this device has no bfloat16 matrix products")
    measured = f"bfloat16 matrix products measured {speedup:.3g}x as fast as float32 on this device"
    if speedup >= BF16_MIN_SPEEDUP:
        return Choice("bf16", measured)
    # a CPU without bfloat16 dot-product instructions converts every element, far slower than float32
    slower = " (slower than float32: likely no bfloat16 instructions)" if speedup < 1 else ""
    return Choice("fp32", f"{measured}{slower}, under {BF16_MIN_SPEEDUP}x")


def _times(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.1f}x"


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"
