"""What a training run is asked to do (:class:`TrainConfig`) and what it gives back.

Model hyperparameters (learning rate, batch size, label smoothing, negatives,
weight decay) belong to the plugin's :class:`~kgserver.registry.Hyperparameters`;
this config holds only how the loop runs: length, budget, device, mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from kgserver.errors import ConfigurationError
from kgserver.registry import KGModel

Mode = Literal["auto", "full", "sampled"]
MODES = ("auto", "full", "sampled")
Precision = Literal["fp32", "bf16"]
PRECISIONS = ("fp32", "bf16")


class Observer(Protocol):
    """Anything that wants each epoch's numbers (a progress bar, MLflow tracking)."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None: ...


@runtime_checkable
class StepObserver(Observer, Protocol):
    """An observer that also follows the steps within an epoch (a progress display on a graph
    whose epoch takes minutes or hours)."""

    def on_step(self, epoch: int, step: int, steps: int) -> None: ...


class Observers:
    """Several observers as one (a progress display and run tracking, say), called in order."""

    def __init__(self, *observers: Observer | None) -> None:
        self.observers = [observer for observer in observers if observer is not None]

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        for observer in self.observers:
            observer.on_epoch_end(epoch, metrics)

    def on_step(self, epoch: int, step: int, steps: int) -> None:
        for observer in self.observers:
            if isinstance(observer, StepObserver):
                observer.on_step(epoch, step, steps)


@dataclass
class TrainConfig:
    """How to run training.

    ``patience`` counts validation evaluations (every ``eval_every`` epochs)
    without a better validation MRR before stopping; every ``lr_patience``-th
    such evaluation also multiplies the learning rate by ``lr_decay`` (1 keeps it
    constant), so a run that has stopped improving takes smaller steps before it
    gives up. ``lr_patience`` above 1 keeps one noisy evaluation from halving the
    rate when evaluations are only an epoch apart.
    ``max_minutes`` stops the run cleanly between batches; the best checkpoint
    so far is still used.
    ``valid_limit`` caps the validation triples those evaluations use: a sample
    of that many, fixed by ``seed`` (default: all); the test split is always
    evaluated whole.
    ``mode`` "auto" trains on the full graph when its estimated activation
    memory fits ``memory_budget_gb`` (default: half the device's memory), else
    neighbour-sampled mini-batches with ``fanouts`` neighbours per layer
    (default 10 per layer of the model); a sampled step draws every edge's
    ``num_negatives`` corrupt tails from ``negative_pool`` entities shared by the
    batch, so it scores each query against at most ``batch + negative_pool``
    candidates. ``threads`` sets torch's CPU threads for the run (default: leave
    torch's setting alone).
    ``precision`` "bf16" runs each training step's matrix products (the decoder's
    scores against every candidate, the layers' linear maps) in bfloat16 under
    ``torch.autocast``, accumulating in float32; parameters, optimizer state, the
    loss and every evaluation stay float32. On a CPU with native bfloat16 dot
    products that makes the decoder several times faster (``bench/RESULTS.md``,
    section Training); elsewhere bfloat16 is emulated and slower, which is why
    ``kgserver train`` measures before it chooses (:mod:`kgserver.training.defaults`).
    """

    epochs: int = 100
    seed: int = 0
    device: str = "cpu"
    max_minutes: float | None = None
    patience: int = 5
    eval_every: int = 5
    valid_limit: int | None = None
    lr_decay: float = 0.5
    lr_patience: int = 1
    mode: Mode = "auto"
    fanouts: tuple[int, ...] | None = None
    negative_pool: int = 4096
    grad_clip: float = 1.0
    eval_batch_size: int = 256
    memory_budget_gb: float | None = None
    threads: int | None = None
    precision: Precision = "fp32"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigurationError(f"epochs must be at least 1, got {self.epochs}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigurationError(f"max_minutes must be positive, got {self.max_minutes}")
        if self.patience < 1:
            raise ConfigurationError(f"patience must be at least 1, got {self.patience}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigurationError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.lr_patience < 1:
            raise ConfigurationError(f"lr_patience must be at least 1, got {self.lr_patience}")
        if self.valid_limit is not None and self.valid_limit < 1:
            raise ConfigurationError(f"valid_limit must be at least 1, got {self.valid_limit}")
        if self.eval_every < 1:
            raise ConfigurationError(f"eval_every must be at least 1, got {self.eval_every}")
        if self.mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.fanouts is not None:
            self.fanouts = tuple(int(f) for f in self.fanouts)
            if not self.fanouts or any(f < 1 and f != -1 for f in self.fanouts):
                raise ConfigurationError(f"fanouts must be positive per layer (-1 = all), got {self.fanouts}")
        if self.negative_pool < 1:
            raise ConfigurationError(f"negative_pool must be positive, got {self.negative_pool}")
        if self.grad_clip <= 0:
            raise ConfigurationError(f"grad_clip must be positive, got {self.grad_clip}")
        if self.eval_batch_size < 1:
            raise ConfigurationError(f"eval_batch_size must be positive, got {self.eval_batch_size}")
        if self.memory_budget_gb is not None and self.memory_budget_gb <= 0:
            raise ConfigurationError(f"memory_budget_gb must be positive, got {self.memory_budget_gb}")
        if self.precision not in PRECISIONS:
            raise ConfigurationError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigurationError(f"threads must be at least 1, got {self.threads}")


@dataclass
class TrainResult:
    """The trained model (best checkpoint loaded, eval mode) and its numbers.

    ``metrics`` has flat keys ``test_mrr``, ``test_hits_at_{1,3,10}``,
    ``test_mean_rank`` (and ``test_head_*``/``test_tail_*``), the same with
    ``valid_``, plus ``epochs`` (run) and ``seconds`` (wall time).
    ``history`` has one dict per epoch: ``epoch``, ``loss``, ``epoch_seconds``, ``learning_rate``,
    ``epoch_fraction`` (of the epoch's steps run), and on evaluation epochs ``valid_mrr`` and
    ``valid_hits_at_{1,3,10}``. ``last_epoch_complete`` is False when ``max_minutes`` ended the
    last epoch between two steps.
    """

    model: KGModel
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    mode: str = "full"
    stop_reason: str = "epochs"
    config: TrainConfig | None = None
    last_epoch_complete: bool = True

    def summary(self) -> dict[str, Any]:
        """The metrics plus how the run went (training seconds of each epoch, evaluation excluded), for a
        JSON report."""
        return {
            **self.metrics,
            "best_epoch": self.best_epoch,
            "mode": self.mode,
            "stop_reason": self.stop_reason,
            "epoch_seconds": [round(record["epoch_seconds"], 3) for record in self.history],
            "last_epoch_complete": self.last_epoch_complete,
            "last_epoch_fraction": round(self.history[-1]["epoch_fraction"], 6) if self.history else 0.0,
        }
