"""A plain Python union-find: the reference the component tests compare against."""

from __future__ import annotations


def union_find(edges) -> dict[int, int]:
    """``{node: smallest node of its component}`` for every node seen in ``edges``."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}
