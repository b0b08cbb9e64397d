"""Several server processes on one port: fork, share the port, start and stop together.

``kgserver serve --workers N`` (N > 1) runs N complete servers (each its own gRPC
server, model holder, scorer and registry poller), because one Python process is
bound to one core by its GIL. The parent reserves the port with a socket bound
with ``SO_REUSEPORT`` (port 0 picks one here, so every worker gets the same),
then forks the workers before anything of gRPC exists in it: grpc's core must not
be running in a process that forks. Each worker binds the port itself with
``grpc.so_reuseport`` and the kernel spreads new connections across them.

The workers start and stop as a unit:

- each loads and warms its models, then waits until every worker has done so
  before its health says SERVING, so a probe on any connection sees SERVING only
  when the whole set is ready;
- SIGTERM or SIGINT to the parent is passed to every worker, each drains its own
  in-flight calls, and the parent exits 0 when all of them did;
- a worker that exits on its own (a failed load, a crash) stops the others: the
  parent exits non-zero, so an orchestrator restarts the set rather than leave a
  port where some connections reach nothing.

Each worker follows the registry itself, so after an alias moves every worker
switches within one poll interval of the others.

The workers compute the same embeddings; the parent creates a directory for the set
before the fork and removes it when the set ends, in which the workers hold them once
(see :mod:`.shared`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kgserver.errors import ConfigurationError, WorkerExited
from kgserver.serving.server import ServeConfig
from kgserver.serving.shared import set_directory

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
"""How often the parent checks its workers, and a worker whether its peers are loaded."""


@dataclass(frozen=True)
class WorkerPeers:
    """One worker's view of the set: its index, the set's shared "loaded" flags and embeddings directory."""

    index: int
    count: int
    _loaded: Any  # multiprocessing.Array of int, one flag per worker, created before the fork
    directory: Path
    """Where the set's workers keep the embeddings they share (see :mod:`.shared`)."""

    def mark_loaded(self) -> None:
        self._loaded[self.index] = 1

    def all_loaded(self) -> bool:
        return all(self._loaded[:])


WorkerMain = Callable[[ServeConfig, "WorkerPeers | None"], None]
"""Runs one worker until it is told to stop (builds its own model source, server and scorer)."""


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` (port 0: a free one) with ``SO_REUSEPORT`` so the workers can share it."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error}") from None
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def supervise(config: ServeConfig, count: int, worker_main: WorkerMain) -> None:
    """Fork ``count`` workers sharing ``config``'s port, wait for them, stop them together.

    Returns when every worker exited 0 after SIGTERM/SIGINT; raises
    :class:`~kgserver.errors.WorkerExited` when one exited on its own or failed.
    """
    if count < 1:
        raise ConfigurationError(f"--workers must be at least 1, got {count}")
    config.validate()
    with reserved_port(config.host, config.port) as port, set_directory() as directory:
        shared = replace(config, port=port, reuse_port=True)
        loaded = multiprocessing.get_context("fork").Array("i", count)
        pids: dict[int, int] = {}
        for index in range(count):
            pid = os.fork()
            if pid == 0:
                _run_worker(worker_main, shared, WorkerPeers(index, count, loaded, directory))
            pids[pid] = index
        log.info("started %d workers on %s:%d (pids %s)", count, config.host, port, ", ".join(map(str, pids)))
        _wait(pids, loaded)


def _run_worker(worker_main: WorkerMain, config: ServeConfig, peers: WorkerPeers) -> None:
    """The forked child's whole life: never returns into the parent's code."""
    code = 1
    try:
        worker_main(config, peers)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException as error:  # the child's edge: report here, the parent names the worker
        exit_code = getattr(error, "exit_code", None)
        if isinstance(exit_code, int):
            log.error("worker %d: %s", peers.index, error)
            code = exit_code
        else:
            log.exception("worker %d failed", peers.index)
    finally:
        logging.shutdown()
        os._exit(code)


def _wait(pids: dict[int, int], loaded: Any) -> None:
    """Forward stop signals, report readiness once, and end the set when any worker ends."""
    stop_requested: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stop_requested.append(signum)
        _signal_all(pids, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    ready_logged = False
    failed: tuple[int, int, int] | None = None  # (index, pid, code) of the first worker that ended on its own
    while pids:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if not ready_logged and all(loaded[:]):
                log.info("all %d workers ready (pid %d)", len(loaded), os.getpid())
                ready_logged = True
            time.sleep(POLL_SECONDS)
            continue
        if pid not in pids:
            continue
        index = pids.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stop_requested and code == 0:
            continue
        log.error("worker %d (pid %d) exited with %d; stopping the other workers", index, pid, code)
        if failed is None:
            failed = (index, pid, code)
            _signal_all(pids, signal.SIGTERM)
    if failed is not None:
        raise WorkerExited(*failed)
    log.info("all workers stopped")


def _signal_all(pids: dict[int, int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
