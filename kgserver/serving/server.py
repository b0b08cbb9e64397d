"""Assemble and run the gRPC server: servicer, health, reflection, TLS, auth, drain on SIGTERM.

:class:`KGServer` owns the pieces and their order of life: bind and start with
health ``NOT_SERVING`` (probes can connect while models load), load every model,
switch health to ``SERVING`` and start polling the registry; on stop, report
``NOT_SERVING``, let in-flight requests finish within the grace period, then stop
the scorer and the poller.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kgserver.errors import ConfigurationError
from kgserver.serving.auth import TokenAuthInterceptor, read_token
from kgserver.serving.budget import ResponseBudget
from kgserver.serving.holder import Builder, ModelHolder, Resolver
from kgserver.serving.scorer import BatchScorer
from kgserver.serving.served import ServedModel
from kgserver.serving.servicer import SERVICE_NAME, KnowledgeGraphCompletion
from kgserver.serving.tls import read_key_pair

if TYPE_CHECKING:
    from kgserver.serving.workers import WorkerPeers

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_PORT = 65535
MAX_INT32 = 2**31 - 1
BUDGET_WAIT_SECONDS = 30.0
"""Longest a call without a deadline waits for room in the response budget.

A call with a deadline waits until shortly before it.
"""
PEER_POLL_SECONDS = 0.05
"""How often a loaded worker checks whether its peers have loaded too."""


@dataclass
class ServeConfig:
    """Everything ``kgserver serve`` can be told; defaults match its options."""

    models: list[str]
    host: str = "127.0.0.1"
    port: int = 50051
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_token_file: Path | None = None
    max_k: int = 1000
    max_batch: int = 1024
    poll_seconds: float = 10.0
    threads: int = 128
    reuse_port: bool = False
    """Share the port with other processes (``SO_REUSEPORT``): set for each of several worker processes."""
    batch_wait_ms: float = 5.0
    grace_seconds: float = 20.0
    response_memory_mb: int = 128

    def validate(self) -> None:
        if not self.models:
            raise ConfigurationError("give at least one --model NAME@ALIAS")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("--tls-cert and --tls-key go together")
        if not 0 <= self.port <= MAX_PORT:
            raise ConfigurationError(f"--port must be between 0 and {MAX_PORT}, got {self.port}")
        for name, value in (
            ("--max-k", self.max_k),
            ("--max-batch", self.max_batch),
            ("--threads", self.threads),
            ("--response-memory-mb", self.response_memory_mb),
        ):
            if not 1 <= value <= MAX_INT32:
                raise ConfigurationError(f"{name} must be between 1 and {MAX_INT32}, got {value}")
        if self.batch_wait_ms < 0 or self.grace_seconds < 0:
            raise ConfigurationError("--batch-wait-ms and --grace-seconds cannot be negative")


class KGServer:
    """One running kgserver: gRPC server, model holder and batching scorer."""

    def __init__(self, config: ServeConfig, resolve: Resolver, build: Builder) -> None:
        config.validate()
        self.config = config
        key_pair = read_key_pair(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
        self.holder = ModelHolder(config.models, resolve, build, config.poll_seconds, warm=self._warm)
        self.scorer = BatchScorer(config.max_batch, config.batch_wait_ms / 1000)
        self.budget = ResponseBudget(config.response_memory_mb * 2**20, MAX_MESSAGE_BYTES, BUDGET_WAIT_SECONDS)
        self.health = health.HealthServicer()
        interceptors = []
        if config.auth_token_file is not None:
            interceptors.append(TokenAuthInterceptor(read_token(config.auth_token_file)))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="kgserver-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", int(config.reuse_port)),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        self.servicer = KnowledgeGraphCompletion(
            self.holder, self.scorer, self.budget, max_k=config.max_k, max_batch=config.max_batch
        )
        handlers = self.servicer.method_handlers()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        self.server.add_registered_method_handlers(SERVICE_NAME, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self._bind(key_pair)
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def _bind(self, key_pair: tuple[bytes, bytes] | None) -> int:
        """Listen on the configured address: TLS with ``(key, certificate chain)`` PEM, else plaintext."""
        address = f"{self.config.host}:{self.config.port}"
        try:
            if key_pair is not None:
                return self.server.add_secure_port(address, grpc.ssl_server_credentials([key_pair]))
            return self.server.add_insecure_port(address)
        except RuntimeError as error:
            raise ConfigurationError(f"cannot listen on {address}: {error}") from None

    def _set_health(self, status: int) -> None:
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def start(self) -> None:
        """Accept connections; health reports NOT_SERVING until :meth:`load` finishes."""
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.server.start()
        log.info("listening on %s (%s)", self.address, "TLS" if self.config.tls_cert else "plaintext")

    def load(self) -> None:
        """Load and warm every model, report SERVING, then start watching the registry."""
        self.load_models()
        self.go_live()

    def load_models(self) -> None:
        """Load every model and warm it (see :meth:`_warm`); health still says NOT_SERVING."""
        self.holder.load()
        for served in self.holder.current():
            log.info(
                "serving %s as %s (%s, %d entities)", served.ref, served.version, served.plugin, served.num_entities
            )

    def go_live(self) -> None:
        """Report SERVING and start watching the registry."""
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.holder.start_polling()

    def _warm(self, served: ServedModel) -> None:
        """Answer a few real queries with ``served`` before it is served (first load or swap)."""
        self.servicer.warm(served)

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within ``grace`` seconds, release everything."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.config.grace_seconds if grace is None else grace).wait()
        self.scorer.close()
        self.holder.stop()
        stats = self.scorer.stats
        log.info(
            "scorer: %d requests in %d batches (mean %.1f queries per batch)",
            stats.jobs,
            stats.batches,
            stats.mean_batch_rows,
        )
        log.info("stopped")

    def wait(self) -> None:
        """Block until :meth:`stop` has run."""
        self._stopped.wait()
        self.server.wait_for_termination()


def run(server: KGServer, peers: WorkerPeers | None = None) -> None:
    """Start ``server``, load its models and serve until SIGTERM or SIGINT, then drain.

    As one of several workers (``peers``), health turns SERVING only once every
    worker has loaded its models (see :mod:`.workers`).

    The signal handler only flags the request; the drain runs on this thread so
    the process exits 0 once in-flight requests are answered. The handlers stay
    installed until the process ends: a repeated signal during the drain is
    logged, not allowed to kill the process half-way.
    """
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        name = signal.Signals(signum).name
        if stop_requested.is_set():
            log.info("%s received; already draining", name)
        else:
            log.info("%s received; draining in-flight requests", name)
        stop_requested.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    server.start()
    try:
        server.load_models()
        if peers is not None:
            peers.mark_loaded()
            while not peers.all_loaded():
                if stop_requested.wait(PEER_POLL_SECONDS):
                    server.stop(grace=0)
                    return
        server.go_live()
    except BaseException:
        server.stop(grace=0)
        raise
    log.info("ready (pid %d)", os.getpid())
    while not stop_requested.wait(1.0):
        pass
    server.stop()
