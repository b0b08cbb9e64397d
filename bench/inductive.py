"""Semi-inductive benchmark: entities that appear after training, embedded live from their neighbourhood.

Protocol (seeded): of the entities with at least 4 triples in the whole dataset
(train, valid and test), 10% are held out as "emerging". Every triple touching
an emerging entity is removed from training (and from the validation and test
splits the training run uses). Each emerging entity's triples (a triple between
two emerging entities belongs to the one named first, head before tail) are
shuffled and split in half: the first half is "support" (imported after
training), the rest "query". Query triples are ranked head and tail against all
entities, known and emerging, filtered by every true triple of the dataset
(realistic ties), and reported as MRR and Hits@1/10.

Rows, per plugin:

(a) live: the plugin trained with ``unseen_entity_rate`` (the plugin's default unless
    ``--unseen-rate``) on the known entities,
    saved as a bundle, loaded and built as the server builds it
    (``ServedModel.build``), then given the support triples through
    :func:`kgserver.serving.live.reencode`, exactly as the store watcher calls it;
(b) retrained: the same plugin and hyperparameters (``unseen_entity_rate`` 0)
    trained from scratch on the training plus support triples, all entities known;
(c) popularity: each query scored by how often each entity answers its relation
    in that direction in training plus support.

Every training gets the same ``--max-minutes`` budget (and the same epoch cap), and
what it leaves open (batch size, validation interval, learning-rate patience,
threads, precision) is chosen as ``kgserver train`` chooses it for that graph
(:func:`kgserver.training.defaults.size_defaults`), printed on stderr.

    .venv/bin/python bench/inductive.py --dataset codex-s --models compgcn,gatv2 --max-minutes 4
    .venv/bin/python bench/inductive.py --dataset fb15k-237 --models compgcn,gatv2 --max-minutes 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import read_splits  # noqa: E402  # the benchmarks' one reader of a dataset's splits

from kgserver.evaluation.ranking import RankAccumulator, filtered_ranks  # noqa: E402
from kgserver.graph import Snapshot  # noqa: E402
from kgserver.graph.index import TripleIndex  # noqa: E402
from kgserver.graph.vocabulary import Vocabulary  # noqa: E402
from kgserver.registry import KGModel, get_model  # noqa: E402
from kgserver.serving.live import reencode  # noqa: E402
from kgserver.serving.served import ServedModel  # noqa: E402
from kgserver.tracking.bundle import load_bundle, save_bundle  # noqa: E402
from kgserver.training import TrainConfig, seed_everything, train  # noqa: E402
from kgserver.training.defaults import GraphSize, Machine, size_defaults  # noqa: E402
from kgserver.training.distributed import Ranks  # noqa: E402

MIN_TRIPLES = 4
EMERGING_FRACTION = 0.1


@dataclass
class Split:
    """The protocol's data, in "extended" ids: known entities first, emerging ones appended."""

    entities: list[str]
    relations: list[str]
    num_known: int
    train: Tensor
    valid: Tensor
    test: Tensor
    support: Tensor
    query: Tensor
    everything: Tensor


def semi_inductive_split(dataset: str, seed: int) -> Split:
    names, relations, ids = read_splits(dataset)
    parts = {key: torch.tensor(value, dtype=torch.int64) for key, value in ids.items()}
    everything = torch.cat([parts["train"], parts["valid"], parts["test"]])
    degree = torch.bincount(everything[:, [0, 2]].reshape(-1), minlength=len(names))
    generator = torch.Generator().manual_seed(seed)
    eligible = (degree >= MIN_TRIPLES).nonzero()[:, 0]
    chosen = eligible[torch.randperm(len(eligible), generator=generator)[: int(EMERGING_FRACTION * len(eligible))]]
    emerging = torch.zeros(len(names), dtype=torch.bool)
    emerging[chosen] = True
    # renumber: known entities keep their order, emerging ones go after them
    order = torch.cat([(~emerging).nonzero()[:, 0], emerging.nonzero()[:, 0]])
    new_id = torch.empty_like(order)
    new_id[order] = torch.arange(len(order))

    def renumbered(triples: Tensor) -> Tensor:
        return torch.stack([new_id[triples[:, 0]], triples[:, 1], new_id[triples[:, 2]]], dim=1)

    def touching(triples: Tensor) -> Tensor:
        return emerging[triples[:, 0]] | emerging[triples[:, 2]]

    kept = {key: renumbered(value[~touching(value)]) for key, value in parts.items()}
    held = everything[touching(everything)]
    held = held[torch.randperm(len(held), generator=generator)]
    owner = torch.where(emerging[held[:, 0]], held[:, 0], held[:, 2])
    support_rows, query_rows = [], []
    for entity in chosen.tolist():
        rows = (owner == entity).nonzero()[:, 0]
        half = (len(rows) + 1) // 2
        support_rows.append(rows[:half])
        query_rows.append(rows[half:])
    return Split(
        entities=[names[i] for i in order.tolist()],
        relations=relations,
        num_known=int((~emerging).sum()),
        train=kept["train"],
        valid=kept["valid"],
        test=kept["test"],
        support=renumbered(held[torch.cat(support_rows)]),
        query=renumbered(held[torch.cat(query_rows)]),
        everything=renumbered(everything),
    )


def trained(
    plugin: str, snapshot: Snapshot, assigned: dict[str, object], args: argparse.Namespace
) -> tuple[KGModel, dict[str, object]]:
    """``plugin`` trained on ``snapshot`` with the ``assigned`` hyperparameters and the run
    settings given on the command line, the rest chosen as ``kgserver train`` would; and how
    the training went (epochs, best epoch, what stopped it)."""
    cls = get_model(plugin)
    given = {
        "epochs": args.epochs, "seed": args.seed, "max_minutes": args.max_minutes, "mode": "full",
        "threads": args.threads, "eval_every": args.eval_every, "precision": args.precision,
    }  # fmt: skip
    explicit = frozenset(name for name, value in given.items() if value is not None)
    machine = Machine.of_this_process(torch.device("cpu"), Ranks(), probe_bf16="precision" not in explicit)
    config = TrainConfig(**{name: given[name] for name in explicit})
    sizing = size_defaults(GraphSize.of(snapshot), machine, cls, assigned, config, explicit)
    for line in sizing.lines():
        print(f"{plugin}, {len(snapshot.train):,} training triples: {line}", file=sys.stderr, flush=True)
    seed_everything(args.seed)
    model = cls(snapshot.num_entities, snapshot.num_relations, sizing.hyperparameters)
    result = train(model, snapshot, sizing.config)
    run = {"epochs": len(result.history), "best_epoch": result.best_epoch, "stopped_by": result.stop_reason}
    return result.model, run


def rank_queries(split: Split, score_tails: Callable[[Tensor, Tensor], Tensor]) -> dict[str, float]:
    """Filtered head and tail ranks of the query triples; ``score_tails(subjects, relations) -> [B, N]``."""
    num_relations = len(split.relations)
    known = TripleIndex.build(split.everything, num_relations)
    heads, rels, tails = split.query.unbind(1)
    subjects, relations = torch.cat([heads, tails]), torch.cat([rels, rels + num_relations])
    objects = torch.cat([tails, heads])
    ranks = RankAccumulator()
    for batch in torch.arange(len(subjects)).split(256):
        scores = score_tails(subjects[batch], relations[batch])
        rows, answers = known.lookup(subjects[batch], relations[batch])
        ranks.add(filtered_ranks(scores, objects[batch], rows, answers))
    return ranks.metrics()


def live_row(plugin: str, split: Split, hparams: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """(a): trained on the known entities, served from a bundle, the support triples imported live."""
    known = split.num_known
    snapshot = Snapshot(args.dataset, split.entities[:known], split.relations, split.train, split.valid, split.test)
    given_rate = {} if args.unseen_rate is None else {"unseen_entity_rate": args.unseen_rate}
    model, run = trained(plugin, snapshot, {**hparams, **given_rate}, args)
    with tempfile.TemporaryDirectory() as directory:
        loaded = load_bundle(save_bundle(Path(directory) / "bundle", model, snapshot))
    served = ServedModel.build("bench@live", loaded)
    current = torch.cat([split.train, split.support])
    touched = torch.unique(torch.cat([torch.arange(known, len(split.entities)), split.support[:, [0, 2]].reshape(-1)]))
    started = time.monotonic()
    entity_emb = reencode(served, Vocabulary(split.entities, split.relations), current, touched)
    seconds = time.monotonic() - started

    def score_tails(subjects: Tensor, relations: Tensor) -> Tensor:
        with torch.inference_mode():
            return served.model.score(entity_emb[subjects], served.relation_emb[relations], entity_emb)

    rate = model.hparams.unseen_entity_rate  # type: ignore[attr-defined]
    return {**rank_queries(split, score_tails), **run, "reencode_seconds": seconds, "unseen_entity_rate": rate}


def retrained_row(plugin: str, split: Split, hparams: dict[str, object], args: argparse.Namespace) -> dict[str, object]:
    """(b): the upper bound, every entity known in training, the support triples trained on."""
    snapshot = Snapshot(
        args.dataset, split.entities, split.relations, torch.cat([split.train, split.support]), split.valid, split.test
    )
    model, run = trained(plugin, snapshot, {**hparams, "unseen_entity_rate": 0.0}, args)
    with torch.inference_mode():
        entity_emb, relation_emb = model.encode(snapshot.message_graph())

    def score_tails(subjects: Tensor, relations: Tensor) -> Tensor:
        with torch.inference_mode():
            return model.score(entity_emb[subjects], relation_emb[relations], entity_emb)

    return {**rank_queries(split, score_tails), **run}


def popularity_row(split: Split) -> dict[str, float]:
    """(c): how often each entity answers each relation in each direction, in training plus support."""
    seen = torch.cat([split.train, split.support])
    num_relations, num_entities = len(split.relations), len(split.entities)
    counts = torch.zeros(2 * num_relations, num_entities)
    heads, rels, tails = seen.unbind(1)
    counts.index_put_((rels, tails), torch.ones(len(seen)), accumulate=True)
    counts.index_put_((rels + num_relations, heads), torch.ones(len(seen)), accumulate=True)
    return rank_queries(split, lambda subjects, relations: counts[relations])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="codex-s")
    parser.add_argument("--models", default="compgcn,gatv2")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="time budget of each training")
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--threads", type=int, help="threads of each training (default: kgserver train's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every", type=int, help="validation interval (default: kgserver train's choice)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], help="default: kgserver train's choice (auto)")
    parser.add_argument(
        "--unseen-rate", type=float, help="unseen_entity_rate of row (a)'s training (default: the plugin's)"
    )
    parser.add_argument("--set", action="append", default=[], help="key=value hyperparameter for every training")
    parser.add_argument("--rows", default="a,b,c", help="the rows to run, comma-separated (a: live, b: retrained, c)")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    if not rows <= {"a", "b", "c"}:
        parser.error(f"--rows takes a, b and c; got {args.rows!r}")

    split = semi_inductive_split(args.dataset, args.seed)
    header = {
        "dataset": args.dataset,
        "known_entities": split.num_known,
        "emerging_entities": len(split.entities) - split.num_known,
        "train": len(split.train),
        "support": len(split.support),
        "query": len(split.query),
        "max_minutes": args.max_minutes,
        "seed": args.seed,
        "load_average": os.getloadavg(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(header), flush=True)
    if "c" in rows:
        print(json.dumps({"row": "c", "model": "popularity", **popularity_row(split)}), flush=True)
    for plugin in args.models.split(","):
        cls = get_model(plugin)
        hparams = cls.hyperparameters.parse_values(args.set)
        if "a" in rows:
            print(json.dumps({"row": "a", "model": plugin, **live_row(plugin, split, hparams, args)}), flush=True)
        if "b" in rows:
            print(json.dumps({"row": "b", "model": plugin, **retrained_row(plugin, split, hparams, args)}), flush=True)
    print(json.dumps({"finished": datetime.now(UTC).isoformat(timespec="seconds"), "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
