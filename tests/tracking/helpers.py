"""A tiny graph, a tiny real plugin model, a short real training, and process helpers.

The graph is small and structured (relation r maps entity e to (e * (r + 2) + r + 1) mod N)
so that two epochs of 1-N training already give non-trivial metrics in well under a
second. The model is the built-in ``rgcn`` plugin (DistMult decoder, 16 dimensions),
found through its entry point like any installed plugin.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from kgserver.evaluation import evaluate
from kgserver.graph import Snapshot
from kgserver.registry import KGModel, get_model

NUM_ENTITIES = 30
NUM_RELATIONS = 3
METRIC_KEYS = ("mrr", "hits_at_1", "hits_at_3", "hits_at_10", "mean_rank")
PLUGIN = "rgcn"
HPARAMS = {"embedding_dim": 16, "decoder": "distmult", "num_bases": 2, "dropout": 0.0, "learning_rate": 0.05}


def make_snapshot(name: str = "tiny") -> Snapshot:
    triples = torch.tensor(
        [(h, r, (h * (r + 2) + r + 1) % NUM_ENTITIES) for r in range(NUM_RELATIONS) for h in range(NUM_ENTITIES)],
        dtype=torch.int64,
    )
    order = torch.randperm(len(triples), generator=torch.Generator().manual_seed(7))
    triples = triples[order]
    n_valid = n_test = len(triples) // 10
    return Snapshot(
        name=name,
        entities=[f"http://example.org/entity/{i}" for i in range(NUM_ENTITIES)],
        relations=[f"http://example.org/relation/{r}" for r in range(NUM_RELATIONS)],
        train=triples[n_valid + n_test :],
        valid=triples[:n_valid],
        test=triples[n_valid : n_valid + n_test],
    )


def new_model(snapshot: Snapshot, seed: int = 0, **overrides: Any) -> KGModel:
    torch.manual_seed(seed)
    cls = get_model(PLUGIN)
    return cls(snapshot.num_entities, snapshot.num_relations, cls.hyperparameters.from_dict({**HPARAMS, **overrides}))


@dataclass
class TrainConfig:
    epochs: int = 2
    seed: int = 0


@dataclass
class Result:
    model: KGModel
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def train(model: KGModel, snapshot: Snapshot, config: TrainConfig, observer: Any = None) -> Result:
    """Full-graph 1-N training with BCE, validation after every epoch, as the trainer contract says."""
    torch.manual_seed(config.seed)
    graph = snapshot.message_graph()
    known = torch.cat([snapshot.train, snapshot.valid, snapshot.test])
    R = snapshot.num_relations
    heads = torch.cat([snapshot.train[:, 0], snapshot.train[:, 2]])
    relations = torch.cat([snapshot.train[:, 1], snapshot.train[:, 1] + R])
    targets = F.one_hot(torch.cat([snapshot.train[:, 2], snapshot.train[:, 0]]), snapshot.num_entities).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=model.hparams.learning_rate)
    history: list[dict[str, float]] = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        optimizer.zero_grad()
        entity_emb, relation_emb = model.encode(graph)
        loss = F.binary_cross_entropy_with_logits(
            model.score(entity_emb[heads], relation_emb[relations], entity_emb), targets
        )
        loss.backward()
        optimizer.step()
        valid = evaluate(model, graph, snapshot.valid, known, snapshot.num_entities, R)
        row = {"loss": float(loss), **{f"valid_{key}": valid[key] for key in METRIC_KEYS if key != "mean_rank"}}
        history.append({"epoch": epoch, **row})
        if observer is not None:
            observer.on_epoch_end(epoch, row)
    model.eval()
    metrics: dict[str, float] = {}
    for split in ("valid", "test"):
        values = evaluate(model, graph, getattr(snapshot, split), known, snapshot.num_entities, R)
        metrics.update({f"{split}_{key}": values[key] for key in METRIC_KEYS})
    return Result(model, metrics, history)


def tail_scores(model: KGModel, snapshot: Snapshot) -> torch.Tensor:
    """Scores of every entity as the tail of every test (head, relation): the in-memory reference."""
    model.eval()
    with torch.no_grad():
        entity_emb, relation_emb = model.encode(snapshot.message_graph())
        return model.score(entity_emb[snapshot.test[:, 0]], relation_emb[snapshot.test[:, 1]], entity_emb)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def script(name: str) -> str:
    """A console script of this virtualenv (``kgserver``, ``mlflow``)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{path} is missing: install the project into this environment"
    return str(path)


@contextmanager
def serving_process(
    command: list[str], url: str, log_path: Path, env: dict[str, str], timeout: float = 180
) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group (working directory: the log's folder),
    wait until ``url`` answers 200, and stop the whole group afterwards."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=log_path.parent, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        f"{command[:3]} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                    )
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{url} did not answer within {timeout}s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)


def quiet_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", **extra})
    return env


def track_training(
    snapshot: Snapshot, tracking_uri: str | None = None, register_as: str | None = None, seed: int = 0, epochs: int = 2
) -> tuple[Any, Result]:
    """What ``kgserver train`` does with tracking on: start the run, train with it as observer, finish."""
    from kgserver.tracking import TrainingRun

    model = new_model(snapshot, seed=seed)
    config = TrainConfig(epochs=epochs, seed=seed)
    run = TrainingRun.start(model, snapshot, config, tracking_uri=tracking_uri, register_as=register_as)
    with run:
        result = train(model, snapshot, config, observer=run)
        run.finish(result)
    return run, result
