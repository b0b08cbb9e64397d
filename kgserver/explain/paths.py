"""Short chains of weighted evidence triples that lead from the head to the tail.

A path may use a triple in either direction (messages flow both ways along the
message graph's inverse edges), visits no entity twice and has at most
``max_hops`` triples. A chain is as strong as its weakest link, so a path's
weight is the smallest weight of its triples; ties go to the shorter path. Only
the ``candidates`` best-weighted triples with a positive weight are walked,
which bounds the search whatever the neighbourhood's size.
"""

from __future__ import annotations

from collections import defaultdict

Triple = tuple[int, int, int]
PATH_CANDIDATES = 64
"""The best-weighted triples a path search walks."""


def best_paths(
    head: int,
    tail: int,
    weighted: list[tuple[Triple, float]],
    k: int,
    max_hops: int = 3,
    candidates: int = PATH_CANDIDATES,
) -> list[tuple[list[Triple], float]]:
    """Up to ``k`` paths from ``head`` to ``tail``, best first, each ``(triples, weight)``."""
    supporting = sorted((item for item in weighted if item[1] > 0), key=lambda item: -item[1])[:candidates]
    adjacent: dict[int, list[tuple[int, Triple, float]]] = defaultdict(list)
    for triple, weight in supporting:
        h, _, t = triple
        adjacent[h].append((t, triple, weight))
        if t != h:
            adjacent[t].append((h, triple, weight))
    found: list[tuple[list[Triple], float]] = []

    def walk(node: int, hops: list[Triple], weakest: float, visited: set[int]) -> None:
        for neighbour, triple, weight in adjacent[node]:
            if neighbour in visited:
                continue
            path, strength = [*hops, triple], min(weakest, weight)
            if neighbour == tail:
                found.append((path, strength))
            elif len(path) < max_hops:
                walk(neighbour, path, strength, visited | {neighbour})

    if head != tail:
        walk(head, [], float("inf"), {head})
    found.sort(key=lambda item: (-item[1], len(item[0])))
    return found[:k]
