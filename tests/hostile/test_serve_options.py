"""Hostile `kgserver serve` options: ports out of range, TLS files that are wrong in every way.

Each is refused before anything starts, with exit code 2 (a configuration error)
and a message naming the option or the file; no traceback, no grpc log noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from serving.helpers import bundle_source, self_signed

from kgserver.errors import ConfigurationError
from kgserver.serving.server import KGServer, ServeConfig


def serve(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """`kgserver serve` with ``args``; a model that does not exist, so only option checks can pass or fail first."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "kgserver"), "serve", "--model", str(home / "no-such-model"), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KGSERVER_HOME": str(home)},
    )


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_a_port_out_of_range_exits_2_naming_the_option(tmp_path: Path, port: str) -> None:
    result = serve("--port", port, home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--port'" in result.stderr
    assert "Traceback" not in result.stderr and "listening" not in result.stderr


def test_a_response_budget_below_one_mib_exits_2_naming_the_option(tmp_path: Path) -> None:
    result = serve("--response-memory-mb", "0", home=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Invalid value for '--response-memory-mb'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("port", [65536, 99999, -1])
def test_a_port_out_of_range_is_a_configuration_error_in_the_api_too(port: int) -> None:
    with pytest.raises(ConfigurationError, match=f"--port must be between 0 and 65535, got {port}"):
        ServeConfig(models=["x@y"], port=port).validate()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory, "server")
    other_cert, _ = self_signed(directory, "other")
    garbage = directory / "garbage.pem"
    garbage.write_text("this is not PEM at all\n")
    encrypted = directory / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return {
        "cert": cert,
        "key": key,
        "other_cert": other_cert,
        "garbage": garbage,
        "encrypted": encrypted,
        "missing": directory / "missing.pem",
    }


TLS_CASES = [
    # (cert, key, the message must contain these, with {name} replaced by the path of that file)
    ("key", "cert", ["--tls-cert {key} holds a private key, not a certificate", "swapped"]),
    ("garbage", "key", ["--tls-cert {garbage} holds no PEM certificate"]),
    ("cert", "garbage", ["--tls-key {garbage} holds no PEM private key"]),
    ("cert", "other_cert", ["--tls-key {other_cert} holds a certificate, not a private key"]),
    ("other_cert", "key", ["--tls-key {key} is not the private key of the certificate in --tls-cert {other_cert}"]),
    ("cert", "encrypted", ["--tls-key {encrypted} is encrypted"]),
    ("missing", "key", ["cannot read --tls-cert {missing}"]),
]


@pytest.mark.parametrize("cert, key, expected", TLS_CASES, ids=[f"{c}-{k}" for c, k, _ in TLS_CASES])
def test_bad_tls_files_are_refused_before_binding_naming_the_file(
    tls_files: dict[str, Path], cert: str, key: str, expected: list[str]
) -> None:
    config = ServeConfig(models=["toy@a"], port=0, tls_cert=tls_files[cert], tls_key=tls_files[key])
    with pytest.raises(ConfigurationError) as raised:
        KGServer(config, *bundle_source({}))
    for text in expected:
        assert text.format(**{name: str(path) for name, path in tls_files.items()}) in str(raised.value)


def test_swapped_tls_files_exit_2_from_the_cli_naming_the_file(tls_files: dict[str, Path], tmp_path: Path) -> None:
    result = serve(
        "--port", "0", "--tls-cert", str(tls_files["key"]), "--tls-key", str(tls_files["cert"]), home=tmp_path
    )
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # the console may wrap long paths
    assert f"--tls-cert {tls_files['key']} holds a private key" in message
    assert "Failed to bind" not in result.stderr and "Traceback" not in result.stderr
