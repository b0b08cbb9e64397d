"""The response budget: an answer's worst-case size, known before any scoring, and a cap on answers in flight.

gRPC refuses to send a message above its size limit only after the server has
computed it and built it in memory, and many large answers built at once take the
process's memory far beyond what one of them needs. So every request's answer is
bounded first, from the request and the served version alone:

* a prediction of ``k`` answers is at most the protobuf size of the ``k`` longest
  IRIs of the vocabulary with their scores (so the bound is exact for the worst
  query, and far below ``k x longest IRI`` for vocabularies of mixed lengths);
* an embedding answer echoes the requested IRIs with ``embedding_dim`` floats each;
* a triple-scoring answer is one float per triple.

A bound above the per-response limit (the transport's message limit, or the
in-flight budget when that is smaller) is refused with :class:`ResponseTooLarge`
before scoring. Otherwise a bound above :data:`SMALL_ANSWER_BYTES` is *reserved*
from the in-flight budget while the answer is computed, built and serialized.
Reservations are granted in arrival order; a request that does not fit waits
until shortly (:data:`DEADLINE_MARGIN_SECONDS`) before its call's deadline, or
``wait_seconds`` when the call has none, and is then answered :class:`ServerBusy`
(``RESOURCE_EXHAUSTED``, which reaches the client before its own deadline would
expire). Waiting rather than refusing at once keeps large but legal requests
working under load, as long as their clients allow the time; the cap keeps the
memory they take bounded. When the last large answer in flight is done, the C heap's free
memory is handed back to the operating system (glibc's ``malloc_trim``, where the
C library has it): the allocator would otherwise keep the high-water mark of a
burst of large answers as resident memory for the life of the process. Small
answers never wait behind large ones: at most one per gRPC
worker thread is built at a time, so together they stay below
``workers x SMALL_ANSWER_BYTES`` without being counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator

from kgserver.errors import ResponseTooLarge, ServerBusy
from kgserver.serving.served import ServedModel

SMALL_ANSWER_BYTES = 64 * 1024
"""Answers up to this bound are not counted against the in-flight budget (see the module doc)."""

DEADLINE_MARGIN_SECONDS = 0.5
"""A waiting request gives up this long before its deadline, so the client hears why."""

FLOAT_FIELD_BYTES = 5
"""A ``float`` field: one tag byte and four value bytes."""

NEW_ENTITY_FIELD_BYTES = 2
"""``ScoredEntity.new_entity`` when true (a false one is not sent): one tag byte and one value byte."""


def revision_bytes(served: ServedModel) -> int:
    """Bytes of a response's ``store_revision`` for answers from ``served`` (0 is not sent)."""
    return 1 + varint_bytes(served.store_revision) if served.store_revision else 0


def varint_bytes(value: int) -> int:
    """Bytes of ``value`` (non-negative) as a protobuf varint."""
    return max(1, (value.bit_length() + 6) // 7)


def field_bytes(payload: int) -> int:
    """Bytes of a length-delimited field (field number below 16) whose payload has ``payload`` bytes."""
    return 1 + varint_bytes(payload) + payload


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has no such function (musl, macOS)."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the operating system, where the C library can."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class _AnswerSizes:
    """For one served version: the largest serialized size of ``k`` predictions, for every ``k``."""

    def __init__(self, served: ServedModel) -> None:
        labels = served.labels

        def extra_bytes(entity_id: int, iri: str) -> int:
            """The longest label ``iri`` may carry (in any language) and its new_entity flag."""
            flag = NEW_ENTITY_FIELD_BYTES if served.is_new(entity_id) else 0
            by_language = labels.get(iri)
            if not by_language:
                return flag
            return field_bytes(max(len(label.encode("utf-8")) for label in by_language.values())) + flag

        sizes = sorted(
            (
                field_bytes(field_bytes(len(iri.encode("utf-8"))) + FLOAT_FIELD_BYTES + extra_bytes(i, iri))
                for i, iri in enumerate(served.entities)
            ),
            reverse=True,
        )
        self._cumulative = [0, *itertools.accumulate(sizes)]

    def predictions(self, k: int) -> int:
        """Bytes of one ``Predictions`` (as a field of the response) holding at most ``k`` answers."""
        return field_bytes(self._cumulative[min(k, len(self._cumulative) - 1)])


class ResponseBudget:
    """Bounds answers before they are computed and caps the bytes of answers in flight."""

    def __init__(self, in_flight_bytes: int, max_response_bytes: int, wait_seconds: float) -> None:
        if in_flight_bytes < 1 or max_response_bytes < 1:
            raise ValueError("budgets must be positive")
        self.capacity = in_flight_bytes
        self.wait_seconds = wait_seconds
        if in_flight_bytes < max_response_bytes:
            self.limit, self.limit_name = in_flight_bytes, "--response-memory-mb, the answers the server builds at once"
        else:
            self.limit, self.limit_name = max_response_bytes, "the gRPC message size limit"
        self.in_flight = 0
        self.peak = 0
        self._changed = threading.Condition(threading.Lock())
        self._waiting: deque[object] = deque()
        self._sizes: weakref.WeakKeyDictionary[ServedModel, _AnswerSizes] = weakref.WeakKeyDictionary()
        self._sizes_lock = threading.Lock()

    def predict_bytes(self, served: ServedModel, queries: int, k: int) -> int:
        """Largest serialized ``PredictResponse`` for ``queries`` queries of ``k`` answers each."""
        return (
            queries * self._answer_sizes(served).predictions(k)
            + field_bytes(len(served.version.encode()))
            + revision_bytes(served)
        )

    def embeddings_bytes(self, served: ServedModel, iris: list[str]) -> int:
        """Largest serialized ``GetEntityEmbeddingsResponse`` echoing ``iris``."""
        values = field_bytes(4 * served.embedding_dim)
        rows = sum(field_bytes(field_bytes(len(iri.encode("utf-8"))) + values) for iri in iris)
        return rows + field_bytes(len(served.version.encode())) + revision_bytes(served)

    def scores_bytes(self, served: ServedModel, triples: int) -> int:
        """Largest serialized ``ScoreTriplesResponse`` for ``triples`` triples."""
        return field_bytes(4 * triples) + field_bytes(len(served.version.encode())) + revision_bytes(served)

    @contextlib.contextmanager
    def reserve(self, size: int, deadline_in: float | None = None) -> Iterator[None]:
        """Hold ``size`` bytes of the budget for the duration of the block (nothing when it is small).

        Build the answer in a function called inside the block, so that what it
        allocated is freed before the reservation ends.

        ``deadline_in`` is the seconds left until the call's deadline (None: it has
        none). Raises :class:`ResponseTooLarge` if ``size`` can never fit, and
        :class:`ServerBusy` if no room is made until :data:`DEADLINE_MARGIN_SECONDS`
        before that deadline (or within ``wait_seconds`` without one).
        """
        if size > self.limit:
            raise ResponseTooLarge(size, self.limit, self.limit_name)
        if size <= SMALL_ANSWER_BYTES:
            yield
            return
        wait = self.wait_seconds if deadline_in is None else max(0.0, deadline_in - DEADLINE_MARGIN_SECONDS)
        self._acquire(size, wait)
        try:
            yield
        finally:
            with self._changed:
                self.in_flight -= size
                idle = self.in_flight == 0
                self._changed.notify_all()
            if idle:
                release_free_memory()

    def _acquire(self, size: int, wait: float) -> None:
        with self._changed:
            if not self._waiting and self.in_flight + size <= self.capacity:
                self._grant(size)
                return
            ticket = object()
            self._waiting.append(ticket)
            deadline = time.monotonic() + wait
            while self._waiting[0] is not ticket or self.in_flight + size > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._waiting.remove(ticket)
                    self._changed.notify_all()  # the next in line may fit now
                    raise ServerBusy(
                        f"the server is building {self.in_flight:,} bytes of answers (budget {self.capacity:,} "
                        f"bytes, --response-memory-mb) and this answer needs up to {size:,}; "
                        f"no room within {wait:.1f} s, try again later"
                    )
                self._changed.wait(remaining)
            self._waiting.popleft()
            self._grant(size)
            self._changed.notify_all()  # the next in line may fit too

    def _grant(self, size: int) -> None:
        self.in_flight += size
        self.peak = max(self.peak, self.in_flight)

    def _answer_sizes(self, served: ServedModel) -> _AnswerSizes:
        sizes = self._sizes.get(served)
        if sizes is None:
            with self._sizes_lock:  # computed once per version, not by every concurrent first request
                sizes = self._sizes.get(served)
                if sizes is None:
                    sizes = self._sizes[served] = _AnswerSizes(served)
        return sizes
