"""Greedy k-center (farthest-first traversal) and nearest-center assignment, on numpy.

Vectors are L2-normalized, so cosine distance is ``1 - x·c``.  Each round is one matrix-vector
product fused with an in-place minimum: O(n·d) memory traffic, never an n×k or n×n matrix.
Ties go to the lowest row index, so the result is a pure function of the (id-sorted) input.
Farthest-first is a 2-approximation of the optimal k-center radius (Gonzalez 1985).
"""

from __future__ import annotations

import numpy as np


def first_center(x: np.ndarray) -> int:
    """The row closest to the mean direction: a central, representative starting point."""
    mean = x.mean(axis=0, dtype=np.float64).astype(x.dtype)
    return int(np.argmax(x @ mean))


def update_min_dist(x: np.ndarray, center: np.ndarray, min_dist: np.ndarray, block: int = 1 << 16) -> None:
    """min_dist = min(min_dist, 1 - x @ center), blockwise so temporaries stay small."""
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ center
        np.subtract(1.0, sims, out=sims)
        np.minimum(min_dist[s:s + block], sims, out=min_dist[s:s + block])


def farthest_first(x: np.ndarray, k: int, initial: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of k centers in the order chosen, and every row's distance to its nearest center.

    ``initial`` rows (e.g. already-annotated items) are centers before the greedy rounds start;
    they count towards k.  Without them the first center is :func:`first_center`.
    """
    n = len(x)
    k = min(k, n)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    centers: list[int] = []
    seeds = list(dict.fromkeys(initial or [])) or ([first_center(x)] if n else [])
    for c in seeds[:k]:
        centers.append(int(c))
        update_min_dist(x, x[c], min_dist)
        min_dist[c] = -1.0  # a center is never chosen again, even among exact duplicates
    while len(centers) < k:
        nxt = int(np.argmax(min_dist))  # argmax returns the first maximum: lowest index wins ties
        centers.append(nxt)
        update_min_dist(x, x[nxt], min_dist)
        min_dist[nxt] = -1.0
    return np.asarray(centers, dtype=np.int64), np.maximum(min_dist, 0.0)


def assign(x: np.ndarray, centers: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center (position in ``centers``) and cosine distance for every row, blockwise."""
    c = x[centers]
    labels = np.empty(len(x), dtype=np.int64)
    dist = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ c.T
        best = np.argmax(sims, axis=1)  # first max: lowest cluster id wins ties
        labels[s:s + block] = best
        dist[s:s + block] = 1.0 - sims[np.arange(len(best)), best]
    labels[centers] = np.arange(len(centers))  # a center belongs to its own cluster even on ties
    dist[centers] = 0.0
    return labels, np.maximum(dist, 0.0)
