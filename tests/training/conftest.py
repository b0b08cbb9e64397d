"""Small learnable graphs for the training tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from kgserver.graph import Snapshot


def mirrored_snapshot(num_entities: int = 64, pairs: int = 160, seed: int = 0) -> Snapshot:
    """Random pairs under three relations whose held-out triples follow from training ones.

    ``r1`` is the inverse of ``r0`` (every ``(a, r0, b)`` comes with
    ``(b, r1, a)``) and ``r2`` is symmetric. After a random split most test
    triples have their mirror image in train, so a model that learns the
    relation patterns ranks the answer near the top, while chance is about
    ``H_N / N``. Memorising single entities does not help, which is what makes
    this a test of learning rather than of capacity.
    """
    generator = torch.Generator().manual_seed(seed)

    def random_pairs(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.randint(num_entities, (count,), generator=generator)
        b = (a + 1 + torch.randint(num_entities - 1, (count,), generator=generator)) % num_entities
        return a, b

    a, b = random_pairs(pairs)
    c, d = random_pairs(pairs // 2)
    zeros, ones, twos = (torch.full((n,), value) for n, value in ((pairs, 0), (pairs, 1), (pairs // 2, 2)))
    triples = torch.cat(
        [
            torch.stack([a, zeros, b], 1),
            torch.stack([b, ones, a], 1),
            torch.stack([c, twos, d], 1),
            torch.stack([d, twos, c], 1),
        ]
    )
    triples = torch.unique(triples, dim=0)
    triples = triples[torch.randperm(len(triples), generator=generator)]
    n_valid = n_test = len(triples) // 10
    return Snapshot(
        name="mirrored",
        entities=[f"http://example.org/e{i}" for i in range(num_entities)],
        relations=[f"http://example.org/r{i}" for i in range(3)],
        train=triples[n_valid + n_test :],
        valid=triples[:n_valid],
        test=triples[n_valid : n_valid + n_test],
    )


@pytest.fixture(scope="session")
def mirrored() -> Snapshot:
    return mirrored_snapshot()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny graphs train fastest single-threaded, above all on a shared, busy machine
    where every parallel region waits for a descheduled thread. Tests that are about
    thread-level behaviour (reproducibility) ask for more threads themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
