"""One training step as a batch source hands it to the loop, and a rank's share of a batch.

A source yields, per step, this rank's number of examples, the loss's
normaliser for them (what the loss is a mean over: queries, or answers for
softmax cross-entropy) and a closure computing the loss. The loop runs the
closure itself (through DistributedDataParallel when there are several ranks)
and, knowing every rank's normaliser, rescales each rank's mean so that the
averaged gradients equal those of the one-process loss over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Step:
    """This rank's part of one optimizer step; ``loss`` is None when its share is empty."""

    size: int
    weight: float
    loss: Callable[[], Tensor] | None


def shard_of(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """Rank ``rank``'s contiguous slice of ``batch`` (sizes differ by at most one; may be empty)."""
    if world_size == 1:
        return batch
    return batch.tensor_split(world_size)[rank]
