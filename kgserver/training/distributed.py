"""Data-parallel training over several processes with torch.distributed.

``kgserver train --nproc N`` starts N local worker processes (rank 0 to N-1);
under ``torchrun`` the same command runs once per worker and takes its rank and
the rendezvous from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). Either way
:func:`process_group` joins the group through ``env://`` with the gloo
backend (on CUDA each process uses ``cuda:LOCAL_RANK``; gloo all-reduces CUDA
tensors too, an nccl group for the gradients would be faster).

Every worker loads the same graph snapshot and builds the same model from the
same seed; DistributedDataParallel wraps it and all-reduces the gradients. Each
optimizer step is one global batch shared among the ranks (1-N: its queries;
sampled mode: the edges, through DGL's own ``use_ddp`` loader), and each rank's
loss is weighted by its share of the batch's normaliser, so N workers take the
same steps on the same loss as one process and "the same epochs" means the
same training. Rank 0 alone evaluates, decides on learning-rate decay, early
stopping and the time budget (broadcast to the others), logs to MLflow and
registers the model: one run per job.

A failing worker fails the job: the local launcher reports the first failure
as one error, gives the other workers a moment to notice (a collective with a
dead peer fails at once), then stops them; a worker told to stop raises, so an
open MLflow run ends FAILED. Every collective also has a timeout
(``KGSERVER_DIST_TIMEOUT_MINUTES``, default 30; rank 0's validation runs while
the others wait, so it must exceed one evaluation).

Graphs too large for one machine's memory are not split by this module: every
worker holds the whole graph. Their route is DGL's distributed training
(``dgl.distributed.partition_graph``, ``DistGraph``, ``DistEdgeDataLoader``).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import wait
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from kgserver.errors import ConfigurationError, DistributedTrainingFailed, KGServerError

TIMEOUT_VARIABLE = "KGSERVER_DIST_TIMEOUT_MINUTES"
DEFAULT_TIMEOUT_MINUTES = 30.0
# Seconds the launcher lets the other workers fail on their own (and end their runs) before stopping them.
GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job; one rank of one is a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # the processes of the job on this machine, sharing its cores and memory
    # The one tensor every control message travels in, alive as long as the group: gloo's worker
    # thread may drop the last reference to a collective's tensors, and a tensor made in Python
    # then needs the GIL to die, which deadlocks against the group's destructor at shutdown.
    messages: Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64), compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def step_totals(self, weight: float, size: int, stop: bool) -> tuple[float, int, bool]:
        """Sum of every rank's loss normaliser and batch size for a step, and whether rank 0 says stop."""
        if not self.distributed:
            return weight, size, stop
        totals = self._send(dist.all_reduce, weight, float(size), float(stop and self.is_main))
        return totals[0], int(totals[1]), bool(totals[2])

    def total(self, value: float) -> float:
        """``value`` summed over every rank."""
        if not self.distributed:
            return value
        return self._send(dist.all_reduce, value)[0]

    def minimum(self, value: float) -> float:
        """The smallest ``value`` over every rank (what every rank can afford)."""
        if not self.distributed:
            return value
        return self._send(lambda tensor: dist.all_reduce(tensor, op=dist.ReduceOp.MIN), value)[0]

    def decision(self, learning_rate: float, stop: str | None) -> tuple[float, str | None]:
        """Rank 0's learning rate and stop reason (None: go on), the same on every rank."""
        if not self.distributed:
            return learning_rate, stop
        reasons = (None, "max_minutes", "early_stopping")
        message = self._send(lambda tensor: dist.broadcast(tensor, src=0), learning_rate, reasons.index(stop))
        return message[0], reasons[int(message[1])]

    def _send(self, collective: Callable[[Tensor], Any], *values: float) -> list[float]:
        """Run ``collective`` on ``values`` (at most three) in :attr:`messages`; the values it leaves."""
        self.messages.zero_()
        self.messages[: len(values)] = torch.tensor(values, dtype=torch.float64)
        collective(self.messages)
        return [float(value) for value in self.messages[: len(values)]]

    def forward(self, model: nn.Module) -> Callable[[Callable[[], Tensor] | None], Tensor]:
        """How the loop computes a step's loss: directly, or through DistributedDataParallel.

        DDP syncs the gradients of the module whose forward produced the loss;
        a step's encode and score both run inside :class:`StepLoss`'s forward.
        ``find_unused_parameters``: a plugin may leave some parameters out of a
        step (a decoder term a batch does not reach); DDP then counts them as
        zero on this rank instead of waiting for them forever.
        """
        step = StepLoss(model)
        if not self.distributed:
            return step
        device_ids = [self.local_rank] if next(model.parameters()).is_cuda else None
        return nn.parallel.DistributedDataParallel(step, device_ids=device_ids, find_unused_parameters=True)


class StepLoss(nn.Module):
    """A module whose forward is one step's loss (encode and score), for DDP to wrap."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss: Callable[[], Tensor] | None) -> Tensor:
        """The step's loss; a rank with an empty share still joins the gradient sync, with zero gradients."""
        if loss is None:
            return torch.stack([parameter.sum() for parameter in self.model.parameters()]).sum() * 0.0
        return loss()


SINGLE = Ranks()


def environment_ranks() -> Ranks:
    """The ranks torchrun (or the local launcher) put in the environment; one process without them."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        # torchrun and the local launcher set it; without it, assume every rank is on this machine
        local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    except ValueError as error:
        raise ConfigurationError(
            f"RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers ({error})"
        ) from error
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigurationError(f"RANK={rank} is not a rank of WORLD_SIZE={world_size}")
    if not 1 <= local_world_size <= world_size:
        raise ConfigurationError(f"LOCAL_WORLD_SIZE={local_world_size} must be in [1, WORLD_SIZE={world_size}]")
    return Ranks(rank, world_size, local_rank, local_world_size)


def timeout() -> timedelta:
    """The process group's collective timeout (``KGSERVER_DIST_TIMEOUT_MINUTES``)."""
    text = os.environ.get(TIMEOUT_VARIABLE, str(DEFAULT_TIMEOUT_MINUTES))
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if minutes <= 0:
        raise ConfigurationError(f"{TIMEOUT_VARIABLE} must be a positive number of minutes, got {text!r}")
    return timedelta(minutes=minutes)


@contextmanager
def process_group(device: str) -> Iterator[tuple[Ranks, str]]:
    """Join the environment's process group (if any) for the duration; yields the ranks and this rank's device.

    The group's backend is gloo: the control messages (step totals, rank 0's
    decisions) are CPU tensors. On CUDA, DDP's gradient all-reduce goes
    through the same group; gloo supports CUDA tensors, nccl would be faster.
    """
    ranks = environment_ranks()
    if not ranks.distributed:
        yield ranks, device
        return
    if device.startswith("cuda"):
        device = f"cuda:{ranks.local_rank}"
        torch.cuda.set_device(device)
    for variable in ("MASTER_ADDR", "MASTER_PORT"):
        if variable not in os.environ:
            raise ConfigurationError(f"WORLD_SIZE={ranks.world_size} is set but {variable} is not (run under torchrun)")
    dist.init_process_group("gloo", init_method="env://", timeout=timeout())
    try:
        yield ranks, device
    finally:
        dist.destroy_process_group()


def launch(nproc: int, target: Callable[[Any], None], job: Any) -> None:
    """Run ``target(job)`` in ``nproc`` local worker processes joined in one process group.

    Returns when every worker has finished. The first worker to fail fails the
    job: its :class:`~kgserver.errors.KGServerError` is raised again here, any
    other error as :class:`~kgserver.errors.DistributedTrainingFailed` naming
    the rank; the other workers are stopped. ``target`` and ``job`` must be
    picklable (a module-level function and plain data).
    """
    if nproc < 1:
        raise ConfigurationError(f"--nproc must be at least 1, got {nproc}")
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    port = _free_port()
    workers = [
        context.Process(target=_worker, args=(rank, nproc, port, target, job, errors), name=f"kgserver-rank-{rank}")
        for rank in range(nproc)
    ]
    for worker in workers:
        worker.start()
    failed = _wait_for_first_failure(workers)
    if failed is None:
        return
    _stop(workers)
    reported: dict[int, Any] = {}
    while not errors.empty():
        rank, error = errors.get()
        reported[rank] = error
    error = reported.get(failed)
    if isinstance(error, KGServerError):
        raise error
    cause = error if error is not None else f"exited with code {workers[failed].exitcode}"
    raise DistributedTrainingFailed(f"training worker rank {failed} of {nproc} failed: {cause}; the job was stopped")


def _wait_for_first_failure(workers: list[Any]) -> int | None:
    """Wait until every worker has exited; the rank of the first that failed, or None."""
    running = {worker.sentinel: rank for rank, worker in enumerate(workers)}
    while running:
        for sentinel in wait(list(running)):
            rank = running.pop(sentinel)
            workers[rank].join()
            if workers[rank].exitcode != 0:
                return rank
    return None


def _stop(workers: list[Any]) -> None:
    """Let the other workers fail on their own for a while, then terminate, then kill them."""
    deadline = time.monotonic() + GRACE_SECONDS
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        worker.join(10)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _worker(rank: int, world_size: int, port: int, target: Callable[[Any], None], job: Any, errors: Any) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    signal.signal(signal.SIGTERM, _stopped)
    try:
        target(job)
    except BaseException as error:  # reported to the launcher, which fails the job with it
        errors.put((rank, _picklable(error)))
        raise SystemExit(1) from None


def _stopped(signum: int, frame: object) -> None:
    raise DistributedTrainingFailed("stopped because another training worker failed")


def _picklable(error: BaseException) -> Any:
    """The error itself if it is one of ours and survives pickling, else its text."""
    if isinstance(error, KGServerError):
        try:
            pickle.loads(pickle.dumps(error))
            return error
        except Exception:  # an error that cannot cross processes is reported by its text
            pass
    return f"{type(error).__name__}: {error}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
