"""The batching scorer: concurrent requests share one decoder call and one ``topk``.

Request threads put a job on a queue and wait. A single worker thread takes the
first job, then gathers whatever else arrives within ``max_wait`` seconds (up to
``max_batch`` queries), groups the jobs by the model version they started with,
and answers each group with one ``model.score`` over all entities, a vectorised
known-triple mask and one ``torch.topk``. While it computes, new requests queue
up, so batches grow with concurrency and throughput rises with it. The worker is
the only thread doing tensor work, so torch's intra-op threads are not contended.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

TRIPLE_CHUNK = 256
"""Triples scored per decoder call: each call costs ``chunk**2`` scores, of which the diagonal is kept."""


class ScorerClosed(RuntimeError):
    """The scorer was shut down before it could answer."""


@dataclass(eq=False)
class _Job:
    kind: str  # "topk" | "triples"
    served: ServedModel
    columns: tuple[Tensor, ...]  # (entities, relations) or (heads, relations, tails)
    k: int = 0
    filter_known: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None

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


_STOP = object()


class BatchScorer:
    """Coalesce concurrent top-k and triple-scoring requests into batched tensor calls."""

    def __init__(self, max_batch: int = 1024, max_wait: float = 0.001) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.stats = ScorerStats()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="kgserver-scorer", daemon=True)
        self._worker.start()

    # request side ---------------------------------------------------------------

    def predict(
        self, served: ServedModel, entities: Tensor, relations: Tensor, k: int, filter_known: bool
    ) -> list[tuple[list[int], list[float]]]:
        """Top-``k`` answers of ``(entity, relation, ?)`` per row: ``(ids, scores)``, best first.

        ``relations`` are in ``[0, 2R)``; ask head queries with inverse ids ``r + R``.
        With ``filter_known`` the known answers are left out (so a row may hold fewer
        than ``k`` when fewer unknown candidates exist).
        """
        return self._submit(_Job("topk", served, (entities, relations), k, filter_known))

    def score_triples(
        self, served: ServedModel, heads: Tensor, relations: Tensor, tails: Tensor
    ) -> list[float]:
        """The decoder's score of each ``(head, relation, tail)`` row."""
        return self._submit(_Job("triples", served, (heads, relations, tails)))

    def _submit(self, job: _Job) -> Any:
        if self._closed:
            raise ScorerClosed("the scorer is shut down")
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._worker.join()

    # worker side ----------------------------------------------------------------

    def _run(self) -> None:
        carry: _Job | None = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            batch, carry, stop = self._gather(first)
            self._answer(batch)
            if stop:
                if carry is not None:
                    self._answer([carry])
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """Jobs to answer together, a job left for the next batch, and whether to stop."""
        batch, rows = [first], first.size
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return batch, None, True
            if rows + item.size > self.max_batch:
                return batch, item, False
            batch.append(item)
            rows += item.size
        return batch, None, False

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
                job.done.set()


def _answer_topk(jobs: list[_Job]) -> None:
    served = jobs[0].served
    entities = torch.cat([job.columns[0] for job in jobs])
    relations = torch.cat([job.columns[1] for job in jobs])
    scores = served.model.score(
        served.entity_emb[entities], served.relation_emb[relations], served.entity_emb
    )
    known_counts = torch.zeros(len(entities), dtype=torch.int64)
    filtered = torch.cat(
        [torch.full((job.size,), job.filter_known, dtype=torch.bool) for job in jobs]
    ).nonzero().squeeze(1)
    if len(filtered):
        rows, answers = served.known.lookup(entities[filtered], relations[filtered])
        scores[filtered[rows], answers] = float("-inf")
        known_counts[filtered] = torch.bincount(rows, minlength=len(filtered))
    k = min(max(job.k for job in jobs), served.num_entities)
    values, indices = torch.topk(scores, k, dim=1)
    values_list, indices_list = values.tolist(), indices.tolist()
    available = (served.num_entities - known_counts).tolist()
    start = 0
    for job in jobs:
        job.result = [
            (indices_list[row][: min(job.k, available[row])], values_list[row][: min(job.k, available[row])])
            for row in range(start, start + job.size)
        ]
        start += job.size


def _answer_triples(jobs: list[_Job]) -> None:
    served = jobs[0].served
    heads, relations, tails = (torch.cat([job.columns[i] for job in jobs]) for i in range(3))
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
