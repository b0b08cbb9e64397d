"""Helpers of the serving tests: a small graph, a model trained on it, a running server.

The model is a real plugin (CompGCN with a ConvE decoder, small dimensions)
trained for a few epochs with 1-N BCE, saved as a real bundle and served by a
real gRPC server on a free loopback port.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kgserver.graph import Snapshot
from kgserver.registry import KGModel, get_model
from kgserver.serving.served import ServedModel
from kgserver.serving.server import KGServer, ServeConfig
from kgserver.serving.source import served_model
from kgserver.tracking.bundle import load_bundle, save_bundle

NUM_ENTITIES = 60
NUM_RELATIONS = 4
HPARAMS = {"embedding_dim": 32, "conve_height": 4, "conve_filters": 8, "dropout": 0.0}


def entity(i: int) -> str:
    return f"http://example.org/entity/{i}"


def relation(i: int) -> str:
    return f"http://example.org/relation/{i}"


def make_snapshot(name: str = "toy", seed: int = 0) -> Snapshot:
    """A structured graph (a ring, a skip pattern, a few hubs) plus random edges, split 80/10/10."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.arange(NUM_ENTITIES)
    patterned = torch.cat(
        [
            torch.stack([ids, torch.zeros_like(ids), (ids + 1) % NUM_ENTITIES], 1),
            torch.stack([ids, torch.ones_like(ids), (ids * 7 + 3) % NUM_ENTITIES], 1),
            torch.stack([ids, torch.full_like(ids, 2), ids % 5], 1),
        ]
    )
    random = torch.stack(
        [
            torch.randint(0, NUM_ENTITIES, (120,), generator=generator),
            torch.full((120,), 3),
            torch.randint(0, NUM_ENTITIES, (120,), generator=generator),
        ],
        1,
    )
    triples = torch.unique(torch.cat([patterned, random]), dim=0)
    triples = triples[torch.randperm(len(triples), generator=generator)]
    n_valid = n_test = len(triples) // 10
    return Snapshot(
        name=name,
        entities=[entity(i) for i in range(NUM_ENTITIES)],
        relations=[relation(i) for i in range(NUM_RELATIONS)],
        train=triples[n_valid + n_test :],
        valid=triples[:n_valid],
        test=triples[n_valid : n_valid + n_test],
    )


def train_model(snapshot: Snapshot, seed: int, epochs: int = 8, **overrides: object) -> KGModel:
    """A few epochs of 1-N training (BCE over all tails, both directions) on the full graph;
    ``overrides`` change the test hyperparameters (e.g. ``unseen_entity_rate``)."""
    torch.manual_seed(seed)
    model_class = get_model("compgcn")
    model = model_class(
        snapshot.num_entities, snapshot.num_relations, model_class.hyperparameters.from_dict({**HPARAMS, **overrides})
    )
    graph = snapshot.message_graph()
    heads, rels, tails = snapshot.train.unbind(1)
    queries = torch.stack([torch.cat([heads, tails]), torch.cat([rels, rels + snapshot.num_relations])], 1)
    answers = torch.cat([tails, heads])
    keys, inverse = torch.unique(queries, dim=0, return_inverse=True)
    targets = torch.zeros(len(keys), snapshot.num_entities)
    targets[inverse, answers] = 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(keys)).split(64):
            entity_emb, relation_emb = model.encode(graph)
            logits = model.score(entity_emb[keys[batch, 0]], relation_emb[keys[batch, 1]], entity_emb)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def long_iri_snapshot(num_entities: int, iri_chars: int, name: str = "wide", seed: int = 0) -> Snapshot:
    """A random graph whose entity IRIs are ``iri_chars`` characters long (for response-size limits)."""
    generator = torch.Generator().manual_seed(seed)
    count = 4 * num_entities
    triples = torch.stack(
        [
            torch.randint(0, num_entities, (count,), generator=generator),
            torch.randint(0, NUM_RELATIONS, (count,), generator=generator),
            torch.randint(0, num_entities, (count,), generator=generator),
        ],
        1,
    )
    prefix = "http://example.org/long/"
    entities = [f"{prefix}{'x' * (iri_chars - len(prefix) - 7)}/{i:06d}" for i in range(num_entities)]
    return Snapshot(name, entities, [relation(i) for i in range(NUM_RELATIONS)], triples, triples[:0], triples[:0])


def random_bundle(directory: Path, snapshot: Snapshot, dim: int = 8, seed: int = 0) -> Path:
    """A real plugin's model with random weights saved as a bundle: for tests where answers' sizes and
    status codes matter, not their quality."""
    torch.manual_seed(seed)
    model_class = get_model("compgcn")
    hparams = model_class.hyperparameters.from_dict({"embedding_dim": dim, "dropout": 0.0})
    model = model_class(snapshot.num_entities, snapshot.num_relations, hparams).eval()
    return save_bundle(directory, model, snapshot)


def bundle_source(bundles: dict[str, tuple[Path, str]], store_url: str | None = None):  # type: ignore[no-untyped-def]
    """``(resolve, build)`` serving fixed bundle directories under fixed version names."""

    def resolve(ref: str) -> str:
        return bundles[ref][1]

    def build(ref: str, version: str) -> ServedModel:
        return served_model(ref, load_bundle(bundles[ref][0], version=version), store_url)

    return resolve, build


@contextlib.contextmanager
def running_server(
    bundles: dict[str, tuple[Path, str]], store_url: str | None = None, **options: object
) -> Iterator[KGServer]:
    """A started, loaded server on a free loopback port; stopped afterwards."""
    resolve, build = bundle_source(bundles, store_url)
    server = KGServer(ServeConfig(models=list(bundles), port=0, **options), resolve, build)  # type: ignore[arg-type]
    server.start()
    try:
        server.load()
        yield server
    finally:
        server.stop(grace=1)


class ServerProcess:
    """``kgserver serve`` as a child process (the real CLI), on a free loopback port.

    The port is read from the server's own log line, so no port is guessed.
    """

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str] | None = None, launcher: list[str] | None = None
    ) -> None:
        import os
        import subprocess
        import sys

        command = [*(launcher or [str(Path(sys.executable).parent / "kgserver")]), "serve", "--port", "0", *args]
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop(), after the process)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.address = self._wait_until_ready()

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_until_ready(self, timeout: float = 180.0) -> str:
        import re
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log()
            if self.process.poll() is not None:
                raise RuntimeError(f"kgserver serve exited with {self.process.returncode}:\n{text}")
            listening = re.search(r"listening on (\S+:\d+)", text)
            if listening and "ready (pid" in text:
                return listening.group(1)
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"kgserver serve did not become ready:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout)
        self._log.close()
        return code


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
