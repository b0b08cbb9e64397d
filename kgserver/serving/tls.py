"""TLS key material, checked before the server starts: readable PEM, the right kind in each file, a matching pair.

grpc only reports a bad certificate or key as a failure to bind, among its C
core's log lines, without saying which file is wrong. These checks run first and
raise :class:`ConfigurationError` naming the file (and the option that gave it).
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)

from kgserver.errors import ConfigurationError

CERT_OPTION = "--tls-cert"
KEY_OPTION = "--tls-key"


def read_key_pair(cert_path: Path, key_path: Path) -> tuple[bytes, bytes]:
    """``(key PEM, certificate chain PEM)`` as grpc takes them, once both files are checked.

    The certificate file must hold at least one PEM certificate, the key file an
    unencrypted PEM private key, and the key must belong to the first certificate.
    """
    cert_pem, key_pem = _read(cert_path, CERT_OPTION), _read(key_path, KEY_OPTION)
    certificate = _certificate(cert_path, cert_pem, key_path)
    key = _private_key(key_path, key_pem, cert_path)
    if _public_der(certificate.public_key()) != _public_der(key.public_key()):
        raise ConfigurationError(
            f"{KEY_OPTION} {key_path} is not the private key of the certificate in {CERT_OPTION} {cert_path}"
        )
    return key_pem, cert_pem


def _read(path: Path, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {option} {path}: {error.strerror}") from None


def _certificate(path: Path, pem: bytes, key_path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        pass
    if b"PRIVATE KEY-----" in pem:
        raise ConfigurationError(
            f"{CERT_OPTION} {path} holds a private key, not a certificate "
            f"(are {CERT_OPTION} and {KEY_OPTION} {key_path} swapped?)"
        )
    raise ConfigurationError(f"{CERT_OPTION} {path} holds no PEM certificate ('-----BEGIN CERTIFICATE-----')")


def _private_key(path: Path, pem: bytes, cert_path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # the key is encrypted: grpc cannot use it
        raise ConfigurationError(f"{KEY_OPTION} {path} is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        pass
    if b"-----BEGIN CERTIFICATE-----" in pem:
        raise ConfigurationError(
            f"{KEY_OPTION} {path} holds a certificate, not a private key "
            f"(are {KEY_OPTION} and {CERT_OPTION} {cert_path} swapped?)"
        )
    raise ConfigurationError(f"{KEY_OPTION} {path} holds no PEM private key ('-----BEGIN PRIVATE KEY-----')")


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
