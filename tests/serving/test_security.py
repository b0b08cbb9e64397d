"""TLS and bearer-token auth: the right credentials work, wrong ones are rejected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kgserver.client import KGClient, RequestFailed
from kgserver.errors import ConfigurationError
from kgserver.serving.auth import read_token
from kgserver.serving.server import KGServer

from .helpers import entity, relation, running_server, self_signed

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory, "server")
    other, _ = self_signed(directory, "other")
    token_file = directory / "token"
    token_file.write_text(TOKEN + "\n")
    return {"cert": cert, "key": key, "other": other, "token": token_file}


@pytest.fixture(scope="module")
def secure_server(bundle_dir: Path, certificates: dict[str, Path]) -> Iterator[KGServer]:
    with running_server(
        {"toy@champion": (bundle_dir, "toy/1")},
        tls_cert=certificates["cert"],
        tls_key=certificates["key"],
        auth_token_file=certificates["token"],
    ) as running:
        yield running


def ask(client: KGClient) -> str:
    return client.predict_tails([(entity(0), relation(0))], k=3).model_version


def test_tls_with_the_right_token_answers(secure_server: KGServer, certificates: dict[str, Path]) -> None:
    with KGClient(secure_server.address, root_certificates=certificates["cert"], token=TOKEN) as client:
        assert ask(client) == "toy/1"
        assert client.list_models().models[0].version == "toy/1"


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", f"Basic {TOKEN}"])
def test_missing_or_wrong_tokens_are_unauthenticated(
    secure_server: KGServer, certificates: dict[str, Path], token: str | None
) -> None:
    with KGClient(secure_server.address, root_certificates=certificates["cert"], token=token) as client:
        with pytest.raises(RequestFailed) as raised:
            ask(client)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_reflection_needs_the_token_too(secure_server: KGServer, certificates: dict[str, Path]) -> None:
    credentials = grpc.ssl_channel_credentials(certificates["cert"].read_bytes())
    with grpc.secure_channel(secure_server.address, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            list(
                stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
            )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_for_probes(secure_server: KGServer, certificates: dict[str, Path]) -> None:
    credentials = grpc.ssl_channel_credentials(certificates["cert"].read_bytes())
    with grpc.secure_channel(secure_server.address, credentials) as channel:
        response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_an_untrusted_certificate_is_refused(secure_server: KGServer, certificates: dict[str, Path]) -> None:
    with KGClient(secure_server.address, root_certificates=certificates["other"], token=TOKEN, timeout=5) as client:
        with pytest.raises(RequestFailed) as raised:
            ask(client)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_plaintext_clients_cannot_talk_to_a_tls_server(secure_server: KGServer) -> None:
    with KGClient(secure_server.address, token=TOKEN, timeout=5) as client, pytest.raises(RequestFailed) as raised:
        ask(client)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


def test_token_auth_without_tls(bundle_dir: Path, certificates: dict[str, Path]) -> None:
    with running_server({"toy@champion": (bundle_dir, "toy/1")}, auth_token_file=certificates["token"]) as server:
        with KGClient(server.address, token=TOKEN) as client:
            assert ask(client) == "toy/1"
        with KGClient(server.address, token="nope") as client, pytest.raises(RequestFailed) as raised:
            ask(client)
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_token_files_must_hold_a_token(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ConfigurationError, match="empty"):
        read_token(empty)
    with pytest.raises(ConfigurationError, match="cannot read"):
        read_token(tmp_path / "missing")
