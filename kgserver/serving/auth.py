"""Bearer-token authentication: a server interceptor checking ``authorization`` metadata.

The standard health service stays open so orchestrators' probes (which send no
credentials) can see readiness; every other method, reflection included, needs
``authorization: Bearer <token>``. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from kgserver.errors import ConfigurationError

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


def read_token(path: str | Path) -> str:
    """The token in ``path`` (surrounding whitespace removed); it must not be empty."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigurationError(f"cannot read the auth token file {path}: {error.strerror}") from None
    if not token:
        raise ConfigurationError(f"the auth token file {path} is empty")
    return token


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Reject calls without the right bearer token with ``UNAUTHENTICATED``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        given = next(
            (value for key, value in details.invocation_metadata if key == "authorization"), None
        )
        if isinstance(given, str) and hmac.compare_digest(given.encode(), self._expected):
            return handler
        reason = "missing bearer token" if given is None else "invalid bearer token"
        return _denying(handler, reason)


def _denying(handler: grpc.RpcMethodHandler, reason: str) -> grpc.RpcMethodHandler:
    """A handler of the same streaming kind as ``handler`` that aborts UNAUTHENTICATED."""

    def deny(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return make(
        deny,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
