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

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kgserver.errors import ConfigurationError
from kgserver.serving.auth import TokenAuthInterceptor, read_token
from kgserver.serving.holder import Builder, ModelHolder, Resolver
from kgserver.serving.scorer import BatchScorer
from kgserver.serving.servicer import SERVICE_NAME, KnowledgeGraphCompletion

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


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
    workers: int = 128
    batch_wait_ms: float = 2.0
    grace_seconds: float = 20.0

    def validate(self) -> None:
        if not self.models:
            raise ConfigurationError("give at least one --model NAME@ALIAS")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigurationError("--tls-cert and --tls-key go together")
        for name, value in (("--max-k", self.max_k), ("--max-batch", self.max_batch), ("--workers", self.workers)):
            if value < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {value}")
        if self.batch_wait_ms < 0 or self.grace_seconds < 0:
            raise ConfigurationError("--batch-wait-ms and --grace-seconds cannot be negative")


class KGServer:
    """One running kgserver: gRPC server, model holder and batching scorer."""

    def __init__(self, config: ServeConfig, resolve: Resolver, build: Builder) -> None:
        config.validate()
        self.config = config
        self.holder = ModelHolder(config.models, resolve, build, config.poll_seconds)
        self.scorer = BatchScorer(config.max_batch, config.batch_wait_ms / 1000)
        self.health = health.HealthServicer()
        interceptors = []
        if config.auth_token_file is not None:
            interceptors.append(TokenAuthInterceptor(read_token(config.auth_token_file)))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="kgserver-rpc"),
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ],
        )
        servicer = KnowledgeGraphCompletion(
            self.holder, self.scorer, max_k=config.max_k, max_batch=config.max_batch
        )
        handlers = servicer.method_handlers()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
        self.server.add_registered_method_handlers(SERVICE_NAME, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self._bind()
        self._stopped = threading.Event()

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    def _bind(self) -> int:
        address = f"{self.config.host}:{self.config.port}"
        try:
            if self.config.tls_cert is not None and self.config.tls_key is not None:
                credentials = grpc.ssl_server_credentials(
                    [(_read_bytes(self.config.tls_key), _read_bytes(self.config.tls_cert))]
                )
                return self.server.add_secure_port(address, credentials)
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
        """Load every model, report SERVING, then start watching the registry."""
        self.holder.load()
        for served in self.holder.current():
            log.info("serving %s as %s (%s, %d entities)", served.ref, served.version, served.plugin, served.num_entities)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self.holder.start_polling()

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
            stats.jobs, stats.batches, stats.mean_batch_rows,
        )
        log.info("stopped")

    def wait(self) -> None:
        """Block until :meth:`stop` has run."""
        self._stopped.wait()
        self.server.wait_for_termination()


def _read_bytes(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {path}: {error.strerror}") from None


def run(server: KGServer) -> None:
    """Start ``server``, load its models and serve until SIGTERM or SIGINT, then drain.

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
        server.load()
    except BaseException:
        server.stop(grace=0)
        raise
    log.info("ready (pid %d)", os.getpid())
    while not stop_requested.wait(1.0):
        pass
    server.stop()
