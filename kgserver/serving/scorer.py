"""The batching scorer: concurrent requests share one decoder call and one ``topk``.

Requests join a pending list. The first request to find no batch in progress
becomes the *leader*: it takes the pending jobs (up to ``max_batch`` queries),
groups them by the model version they started with, and answers each group with
one ``model.score`` over all entities, a vectorised known-triple mask and one
``torch.topk``. Other requests wait; while a batch is computed new ones pile up,
so batches grow with concurrency and throughput rises with it. Once the leader's
own job is answered it hands the role to the oldest waiting job, if any, and
returns. A lone client therefore computes its own answer on its own thread,
with no hand-off to another thread (each hand-off is a wake-up that a busy
machine can delay by milliseconds), and only one thread does tensor work at a
time, so torch's intra-op threads are never contended.

When the previous batch held several jobs (evidence of concurrent clients), the
leader also waits up to ``max_wait`` for as many jobs as that batch had: in a
closed loop the clients answered together send their next requests a few hundred
microseconds apart, and waiting for them turns a trickle of tiny batches into
one full batch. A lone client never waits, since its previous batch held one job.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

TRIPLE_CHUNK = 256
"""Triples scored per decoder call: each call costs ``chunk**2`` scores, of which the diagonal is kept."""


class ScorerClosed(RuntimeError):
    """The scorer was shut down before it could answer."""


class _Job:
    """One request's rows, waiting for the worker; ``ready`` is held until the answer is set.

    A pre-acquired lock is the cheapest one-shot latch Python offers, and a job is
    created per request.
    """

    __slots__ = ("kind", "served", "columns", "k", "filter_known", "ready", "promoted", "result", "error")

    def __init__(
        self, kind: str, served: ServedModel, columns: tuple[list[int], ...], k: int = 0, filter_known: bool = False
    ) -> None:
        self.kind = kind  # "topk" | "triples"
        self.served = served
        self.columns = columns  # (entities, relations) or (heads, relations, tails), as ids
        self.k = k
        self.filter_known = filter_known
        self.ready = threading.Lock()
        self.ready.acquire()
        self.promoted = False  # woken to lead rather than answered
        self.result: Any = None
        self.error: BaseException | None = None

    @property
    def size(self) -> int:
        return len(self.columns[0])


@dataclass
class ScorerStats:
    """Counters for logs and benchmarks: how well requests were coalesced."""

    jobs: int = 0
    rows: int = 0
    batches: int = 0

    @property
    def mean_batch_rows(self) -> float:
        return self.rows / self.batches if self.batches else 0.0


class BatchScorer:
    """Coalesce concurrent top-k and triple-scoring requests into batched tensor calls."""

    def __init__(self, max_batch: int = 1024, max_wait: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = ScorerStats()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._pending: list[_Job] = []
        self._pending_rows = 0
        self._leading = False
        self._last_jobs = 1
        self._wanted = 0  # jobs the waiting leader wants before it is woken (0: not waiting)
        self._closed = False

    def predict(
        self, served: ServedModel, entities: list[int], relations: list[int], k: int, filter_known: bool
    ) -> list[tuple[list[int], list[float]]]:
        """Top-``k`` answers of ``(entity, relation, ?)`` per row: ``(ids, scores)``, best first.

        ``relations`` are in ``[0, 2R)``; ask head queries with inverse ids ``r + R``.
        With ``filter_known`` the known answers are left out (so a row may hold fewer
        than ``k`` when fewer unknown candidates exist).
        """
        return self._submit(_Job("topk", served, (entities, relations), k, filter_known))

    def score_triples(
        self, served: ServedModel, heads: list[int], relations: list[int], tails: list[int]
    ) -> list[float]:
        """The decoder's score of each ``(head, relation, tail)`` row."""
        return self._submit(_Job("triples", served, (heads, relations, tails)))

    def close(self) -> None:
        """Refuse new requests; those already pending are still answered."""
        self._closed = True

    def _submit(self, job: _Job) -> Any:
        if self._closed:
            raise ScorerClosed("the scorer is shut down")
        with self._lock:
            self._pending.append(job)
            self._pending_rows += job.size
            lead = not self._leading
            self._leading = True
            if self._wanted and (len(self._pending) >= self._wanted or self._pending_rows >= self.max_batch):
                self._arrived.notify()  # once per batch, not per arrival: each wake-up costs a thread switch
        if not lead:
            job.ready.acquire()  # released when answered, or when promoted to lead
            lead, job.promoted = job.promoted, False
        if lead:
            self._lead(job)
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self, own: _Job) -> None:
        """Answer batches until ``own`` is answered, then pass the lead to the oldest waiting job."""
        try:
            answered = False
            while not answered:
                batch = self._take()
                self._answer(batch)
                answered = any(job is own for job in batch)
        finally:
            with self._lock:
                successor = self._pending[0] if self._pending else None
                if successor is None:
                    self._leading = False
                else:
                    successor.promoted = True
            if successor is not None:
                successor.ready.release()

    def _take(self) -> list[_Job]:
        """The next batch: pending jobs in arrival order, at least one, at most ``max_batch`` rows."""
        with self._lock:
            self._wanted = self._last_jobs
            deadline = time.monotonic() + self.max_wait
            while len(self._pending) < self._wanted and self._pending_rows < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.wait(remaining)
            self._wanted = 0
            count, rows = 1, self._pending[0].size
            while count < len(self._pending) and rows + self._pending[count].size <= self.max_batch:
                rows += self._pending[count].size
                count += 1
            batch = self._pending[:count]
            del self._pending[:count]
            self._pending_rows -= rows
            self._last_jobs = count
            return batch

    def _answer(self, batch: list[_Job]) -> None:
        groups: dict[tuple[int, str], list[_Job]] = {}
        for job in batch:
            groups.setdefault((id(job.served), job.kind), []).append(job)
        for jobs in groups.values():
            try:
                with torch.inference_mode():
                    if jobs[0].kind == "topk":
                        _answer_topk(jobs)
                    else:
                        _answer_triples(jobs)
            except Exception as error:  # handed to each waiting request thread
                for job in jobs:
                    job.error = error
            self.stats.jobs += len(jobs)
            self.stats.rows += sum(job.size for job in jobs)
            self.stats.batches += 1
            for job in jobs:
                job.ready.release()


def _column(jobs: list[_Job], index: int) -> Tensor:
    return torch.tensor([i for job in jobs for i in job.columns[index]], dtype=torch.int64)


def _answer_topk(jobs: list[_Job]) -> None:
    served = jobs[0].served
    entities, relations = _column(jobs, 0), _column(jobs, 1)
    scores = served.model.score(
        served.entity_emb[entities], served.relation_emb[relations], served.entity_emb
    )
    available = [served.num_entities] * len(entities)
    filtered_rows = [row for row, flag in enumerate(_row_flags(jobs)) if flag]
    if filtered_rows:
        filtered = torch.tensor(filtered_rows, dtype=torch.int64)
        rows, answers = served.known.lookup(entities[filtered], relations[filtered])
        scores[filtered[rows], answers] = float("-inf")
        known = torch.bincount(rows, minlength=len(filtered)).tolist()
        for row, count in zip(filtered_rows, known):
            available[row] -= count
    k = min(max(job.k for job in jobs), served.num_entities)
    values, indices = torch.topk(scores, k, dim=1)
    values_list, indices_list = values.tolist(), indices.tolist()
    start = 0
    for job in jobs:
        job.result = [
            (indices_list[row][: min(job.k, available[row])], values_list[row][: min(job.k, available[row])])
            for row in range(start, start + job.size)
        ]
        start += job.size


def _row_flags(jobs: list[_Job]) -> list[bool]:
    """Per batch row: whether its request asked for filter_known."""
    return [job.filter_known for job in jobs for _ in range(job.size)]


def _answer_triples(jobs: list[_Job]) -> None:
    served = jobs[0].served
    heads, relations, tails = _column(jobs, 0), _column(jobs, 1), _column(jobs, 2)
    scores = torch.cat(
        [
            served.model.score(
                served.entity_emb[heads[i : i + TRIPLE_CHUNK]],
                served.relation_emb[relations[i : i + TRIPLE_CHUNK]],
                served.entity_emb[tails[i : i + TRIPLE_CHUNK]],
            ).diagonal()
            for i in range(0, len(heads), TRIPLE_CHUNK)
        ]
    ).tolist()
    start = 0
    for job in jobs:
        job.result = scores[start : start + job.size]
        start += job.size
