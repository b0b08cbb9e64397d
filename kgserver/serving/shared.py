"""Embeddings held once by a set of worker processes, through files on a RAM filesystem.

Each worker of ``kgserver serve --workers N`` loads its models and runs the encoder
itself (see :mod:`.workers`), so without sharing N workers hold N copies of the same
served embeddings (1M entities x 512 float32 are 2 GB per copy). The set's parent
creates one directory for the set before it forks (:func:`set_directory`: on
``/dev/shm`` when there is one, else the system's temporary directory) and removes it
when the set stops. A worker that has computed an embedding table :func:`publish`\\ es it
under a file named by the table's origin (:func:`origin_key`: the model version, the
store state it was computed from, what it is, its shape and dtype): the first worker to
publish a name writes the file, every worker (the first too) then serves a read-only
mapping of it, so the pages are in memory once for the whole set.

Correctness never rests on the name: a worker serves the mapping only if it is
byte-identical to the table it computed itself (checked, not assumed); otherwise it serves
its own table and says once per version, at WARNING, why that version is not shared. The
encoder over the whole graph gives every worker the same bytes. Re-encoding
(:func:`kgserver.serving.live.reencode`, which also extends a version by the store's
additions at load) does not yet: it encodes on blocks whose in-edges DGL's full-neighbour
sampler orders anew on every call, so sums differ in their last bits and re-encoded tables
stay one per worker until those blocks are built in a fixed order. Nothing writes into
served embeddings; a write into a mapping would fault, never reach the other workers.

:class:`SharedEmbeddings` is one worker's side: it wraps the builder the model holder
loads versions with and the re-encoder the store watcher extends states with, so every
table those produce is published. When a worker publishes a newer table for a
reference, it unlinks the file of the one it replaces; a mapping outlives its file's
name, so states still answering requests (here or in other workers) are unaffected, and
the filesystem frees the pages when the last mapping goes. A worker's own copy of a table
it serves from a mapping is freed, and the C heap trimmed so that it leaves the process.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from kgserver.serving.served import scoring_layout

if TYPE_CHECKING:
    from kgserver.graph.vocabulary import Vocabulary
    from kgserver.serving.holder import Builder
    from kgserver.serving.live import Reencoder
    from kgserver.serving.served import ServedModel

log = logging.getLogger(__name__)

RAM_FILESYSTEM = Path("/dev/shm")
SET_PREFIX = "kgserver-embeddings-"
"""Start of a set directory's name, followed by the parent's pid."""
SUFFIX = ".emb"
DIFFERENCE_SLICE = 2**20
"""Values compared at a time when describing how two tables differ."""


@contextlib.contextmanager
def set_directory() -> Iterator[Path]:
    """A new directory for one worker set's shared embeddings, removed with everything in it on exit."""
    usable = RAM_FILESYSTEM.is_dir() and os.access(RAM_FILESYSTEM, os.W_OK | os.X_OK)
    base = RAM_FILESYSTEM if usable else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix=f"{SET_PREFIX}{os.getpid()}-", dir=base))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        if directory.exists():
            log.warning("could not remove %s (shared embeddings of the stopped workers); remove it by hand", directory)


def origin_key(*origin: object) -> str:
    """A file name for a table computed from ``origin`` (values with a stable ``repr``)."""
    return hashlib.sha256(repr(origin).encode()).hexdigest()[:40] + SUFFIX


@dataclass(frozen=True)
class Published:
    """What :func:`publish` gives a worker to serve."""

    tensor: Tensor
    """A read-only mapping of the published file, or the worker's own table if it could not be shared."""
    unshared: str = ""
    """Why the table is not shared ("": it is)."""

    @property
    def shared(self) -> bool:
        return not self.unshared


def publish(path: Path, tensor: Tensor) -> Published:
    """``tensor`` served from the file ``path``, written by whichever worker publishes it first.

    If ``path`` does not exist, ``tensor``'s bytes are written to a temporary file in
    its directory and linked to ``path`` (which fails if another worker linked it first:
    then that file is used), so ``path`` only ever names one complete file. The file is
    mapped read-only and used only if its bytes equal ``tensor``'s; otherwise, or if it
    cannot be written or mapped, ``tensor`` itself is returned with the reason.
    """
    if not tensor.is_contiguous() and tensor.dim() == 2 and tensor.t().is_contiguous():
        published = publish(path, tensor.t())  # column-major (the served entity table): keep that layout
        return replace(published, tensor=published.tensor.t())
    data = _bytes(tensor)
    if not len(data):
        return Published(tensor, "it is empty")
    try:
        with _opened(path, data) as file:
            size = os.fstat(file.fileno()).st_size
            if size != len(data):
                return Published(tensor, f"{path} holds {size} bytes, this worker's table {len(data)}")
            mapped = _mapped(file, size)
    except OSError as error:
        return Published(tensor, f"cannot write or map {path}: {error}")
    if not torch.equal(mapped, data):
        return Published(tensor, f"{path} is not byte-identical to this worker's table ({_difference(mapped, tensor)})")
    return Published(mapped.view(tensor.dtype).view(tensor.shape))


def _bytes(tensor: Tensor) -> Tensor:
    """``tensor``'s bytes as a flat uint8 view (a copy only if it was not contiguous)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def _opened(path: Path, data: Tensor) -> IO[bytes]:
    """``path`` open for reading, written from ``data`` first if no worker has published it yet."""
    try:
        return open(path, "rb")  # noqa: SIM115  (the caller closes it)
    except FileNotFoundError:
        pass
    descriptor, partial = tempfile.mkstemp(prefix=".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(memoryview(data.numpy()))
        os.link(partial, path)
    except FileExistsError:
        pass  # another worker linked it first: read that one
    finally:
        os.unlink(partial)
    return open(path, "rb")  # noqa: SIM115  (the caller closes it)


def _mapped(file: IO[bytes], size: int) -> Tensor:
    """A read-only uint8 tensor over ``file``'s ``size`` bytes (the mapping stays after ``file`` closes)."""
    array = np.memmap(file, dtype=np.uint8, mode="r", shape=(size,))
    with warnings.catch_warnings():
        # torch warns that it cannot mark the tensor read-only; the pages are (a write faults)
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


def _difference(mapped: Tensor, tensor: Tensor) -> str:
    """How the published bytes differ from ``tensor``, for the warning (in slices: tables can be large)."""
    published, own = mapped.view(tensor.dtype).reshape(-1), tensor.detach().contiguous().reshape(-1)
    differing, largest = 0, 0.0
    for start in range(0, own.numel(), DIFFERENCE_SLICE):
        theirs, ours = published[start : start + DIFFERENCE_SLICE], own[start : start + DIFFERENCE_SLICE]
        differing += int((_bytes(theirs).view(-1, own.element_size()) != _bytes(ours).view(-1, own.element_size()))
                         .any(1).sum())  # fmt: skip
        if own.is_floating_point():
            largest = max(largest, float((theirs.double() - ours.double()).abs().max()))
    text = f"{differing} of {own.numel()} values differ"
    return text + f", by at most {largest:.3g}" if own.is_floating_point() else text


class SharedEmbeddings:
    """One worker's use of its set's directory: the tables its builder and re-encoder compute, published."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._published: dict[tuple[str, str], Path] = {}  # (ref, table) -> the file of its latest table
        self._warned: set[str] = set()  # versions already reported as not shared

    def builder(self, build: Builder) -> Builder:
        """``build`` serving its entity and relation embeddings from the set's files."""

        def shared_build(ref: str, version: str) -> ServedModel:
            own = build(ref, version)
            entity_emb = self._built(own, "entity", own.entity_emb)
            relation_emb = self._built(own, "relation", own.relation_emb)
            served = replace(own, entity_emb=entity_emb, relation_emb=relation_emb)
            del own  # and with it the worker's own tables, where mappings replace them
            _return_freed_memory()
            return served

        return shared_build

    def reencoder(self, reencode: Reencoder) -> Reencoder:
        """``reencode`` serving the entity embeddings it computes from the set's files.

        A re-encoded table is named by the state it extends (version, store revision and
        graph creation time) and by digests of what was re-encoded (the message triples and
        the touched entities), which workers that extend the same state by the same
        changes share.
        """

        def shared_reencode(served: ServedModel, vocabulary: Vocabulary, message_triples: Tensor,
                            touched: Tensor) -> Tensor:  # fmt: skip
            own = scoring_layout(reencode(served, vocabulary, message_triples, touched))  # as it is served
            key = origin_key("reencoded", served.version, served.store_revision, _created_at(served),
                             vocabulary.num_entities, _digest(message_triples), _digest(touched),
                             tuple(own.shape), str(own.dtype))  # fmt: skip
            entity_emb = self._shared(served, "entity", own, key)
            if entity_emb is not own:
                del own
                _return_freed_memory()
            return entity_emb

        return shared_reencode

    def _built(self, served: ServedModel, table: str, tensor: Tensor) -> Tensor:
        """``tensor``, the ``table`` embeddings built (and extended by the store's additions at load)
        for ``served``'s version and store state, published."""
        key = origin_key("built", served.version, served.store_revision, _created_at(served), table,
                         tuple(tensor.shape), str(tensor.dtype))  # fmt: skip
        return self._shared(served, table, tensor, key)

    def _shared(self, served: ServedModel, table: str, tensor: Tensor, key: str) -> Tensor:
        """``tensor`` published as ``key``; the file of ``served.ref``'s previous ``table`` is let go."""
        path = self.directory / key
        published = publish(path, tensor)
        with self._lock:
            if not published.shared and served.version not in self._warned:
                self._warned.add(served.version)
                log.warning("%s: the %s embeddings of %s are not shared with the other workers (%s); "
                            "this worker keeps its own copy", served.ref, table, served.version,
                            published.unshared)  # fmt: skip
            previous = self._published.pop((served.ref, table), None)
            if published.shared:
                self._published[(served.ref, table)] = path
            if previous is not None and previous not in self._published.values():
                previous.unlink(missing_ok=True)
        return published.tensor


def _created_at(served: ServedModel) -> str | None:
    return served.store_created_at.isoformat() if served.store_created_at is not None else None


def _digest(tensor: Tensor) -> str:
    return hashlib.blake2b(memoryview(_bytes(tensor).numpy())).hexdigest()


_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; other C libraries: nothing).

    glibc serves allocations below its mmap threshold (at most 32 MiB) from the heap, and
    freeing them leaves them resident: a worker's own copy of a table that size, replaced by
    the mapping, would still count against it without this.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
