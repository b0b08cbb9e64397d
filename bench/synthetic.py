"""A seeded synthetic knowledge graph at any size, written as gzipped N-Triples splits.

The graph is multi-relational with a skewed degree distribution, as real ones
are: entities belong to types, each relation links one head type to one tail type,
and within a type an entity is drawn with probability proportional to
``rank ** -alpha`` (a Zipf law over a per-type random order), so a few entities are
hubs and most have a handful of edges. Relations are drawn by a Zipf law too.
Every entity gets at least one triple, triples are distinct, and the same seed
writes the same files, so a 1M-triple cut is reproducible and comparable.

Three files in ``--out``, ``train.nt.gz``, ``valid.nt.gz`` and ``test.nt.gz``
(98 / 1 / 1 percent), import with their split taken from the file names::

    .venv/bin/python bench/synthetic.py --triples 10000000 --entities 1000000 --out /tmp/synthetic
    kgserver import /tmp/synthetic/*.nt.gz --graph synthetic
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np

BASE = "http://example.org/synthetic/"
SPLITS = (("train", 0.98), ("valid", 0.01), ("test", 0.01))
CHUNK = 500_000


def zipf_choice(rng: np.random.Generator, size: int, count: int, alpha: float) -> np.ndarray:
    """``count`` draws from ``range(size)`` with probability proportional to ``(i + 1) ** -alpha``."""
    weights = np.arange(1, size + 1, dtype=np.float64) ** -alpha
    cumulative = np.cumsum(weights)
    return np.searchsorted(cumulative, rng.random(count) * cumulative[-1]).astype(np.int64)


def generate(
    entities: int, relations: int, triples: int, types: int, alpha: float, seed: int
) -> np.ndarray:
    """``[n, 3]`` distinct int64 triples; every entity occurs in at least one."""
    if triples < entities:
        raise SystemExit(f"--triples ({triples}) must be at least --entities ({entities})")
    rng = np.random.default_rng(seed)
    entity_type = rng.integers(0, types, entities)
    members = [rng.permutation(np.flatnonzero(entity_type == kind)) for kind in range(types)]
    head_type = rng.integers(0, types, relations)
    tail_type = rng.integers(0, types, relations)

    def draw_member(kinds: np.ndarray) -> np.ndarray:
        chosen = np.empty(len(kinds), dtype=np.int64)
        for kind in np.unique(kinds):
            where = np.flatnonzero(kinds == kind)
            pool = members[kind]
            chosen[where] = pool[zipf_choice(rng, len(pool), len(where), alpha)]
        return chosen

    # one triple per entity first, as head or tail of a relation whose type fits
    heads = np.empty(entities, dtype=np.int64)
    relation_of = np.empty(entities, dtype=np.int64)
    tails = np.empty(entities, dtype=np.int64)
    as_head = rng.random(entities) < 0.5
    for kind in range(types):
        for head_side in (True, False):
            chosen = np.flatnonzero((entity_type == kind) & (as_head == head_side))
            fitting = np.flatnonzero((head_type if head_side else tail_type) == kind)
            if len(fitting) == 0:  # no relation has this type on this side: use any
                fitting = np.arange(relations)
            picked = fitting[rng.integers(0, len(fitting), len(chosen))]
            relation_of[chosen] = picked
            other = draw_member(tail_type[picked] if head_side else head_type[picked])
            heads[chosen] = chosen if head_side else other
            tails[chosen] = other if head_side else chosen
    collected = np.unique(np.stack([heads, relation_of, tails], 1), axis=0)
    while len(collected) < triples:
        wanted = int((triples - len(collected)) * 1.1) + 1000
        relation_of = zipf_choice(rng, relations, wanted, 1.0)
        batch = np.stack([draw_member(head_type[relation_of]), relation_of, draw_member(tail_type[relation_of])], 1)
        collected = np.unique(np.concatenate([collected, batch]), axis=0)
    return _cut(collected, triples, entities, rng)


def _cut(collected: np.ndarray, triples: int, entities: int, rng: np.random.Generator) -> np.ndarray:
    """``triples`` rows of ``collected`` (shuffled) that still cover every entity."""
    order = rng.permutation(len(collected))
    shuffled = collected[order]
    ends = np.concatenate([shuffled[:, 0], shuffled[:, 2]])
    rows = np.concatenate([np.arange(len(shuffled))] * 2)
    first = np.full(entities, len(shuffled), dtype=np.int64)
    np.minimum.at(first, ends, rows)
    needed = np.zeros(len(shuffled), dtype=bool)
    needed[first[first < len(shuffled)]] = True
    extra = np.flatnonzero(~needed)[: triples - int(needed.sum())]
    needed[extra] = True
    return shuffled[needed]


def write(path: Path, triples: np.ndarray) -> None:
    """N-Triples, gzipped, written in chunks so memory stays flat."""
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=1) as handle:
        for start in range(0, len(triples), CHUNK):
            part = triples[start : start + CHUNK]
            handle.write(
                "".join(f"<{BASE}e{h}> <{BASE}r{r}> <{BASE}e{t}> .\n" for h, r, t in part.tolist())
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--relations", type=int, default=200)
    parser.add_argument("--triples", type=int, default=10_000_000)
    parser.add_argument("--types", type=int, default=50, help="entity types; each relation links two")
    parser.add_argument("--alpha", type=float, default=0.9, help="Zipf exponent of entity popularity within a type")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="directory for the three .nt.gz files")
    args = parser.parse_args()
    started = time.perf_counter()
    triples = generate(args.entities, args.relations, args.triples, args.types, args.alpha, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(args.seed + 1).permutation(len(triples))
    start = 0
    for index, (split, fraction) in enumerate(SPLITS):
        end = len(triples) if index == len(SPLITS) - 1 else start + int(round(fraction * len(triples)))
        write(args.out / f"{split}.nt.gz", triples[order[start:end]])
        start = end
    degree = np.bincount(np.concatenate([triples[:, 0], triples[:, 2]]), minlength=args.entities)
    print(
        f"{len(triples):,} triples, {int((degree > 0).sum()):,} entities, {args.relations} relations; "
        f"degree median {int(np.median(degree))}, 99th percentile {int(np.percentile(degree, 99))}, "
        f"max {int(degree.max())}; {time.perf_counter() - started:.1f} s"
    )
    print(f"command: bench/synthetic.py --entities {args.entities} --relations {args.relations} "
          f"--triples {args.triples} --types {args.types} --alpha {args.alpha} --seed {args.seed} --out {args.out}")


if __name__ == "__main__":
    main()
