"""Equal-size k-means and the paper's "diverse subsets" (SelectLLM, Parkar et al. 2024).

The reference code (``get_diverse_kmeans``) fits k-means with ``m = pool / K`` clusters, makes the
clusters equal-sized by a greedy round-robin -- in each of ``K`` rounds every center, in order,
takes its nearest row that no center has taken yet -- and forms subset *p* from the *p*-th member
(in dataset order) of every cluster.  Each of the ``K`` subsets therefore holds one row of every
cluster: a diversity-maximising grouping, one LLM prompt per subset.

This module reproduces that grouping without its defects:

* **Speed.**  The reference argsorts a full distance column for every single pick (O(N² log N)
  time, an N×m matrix).  Here every center walks a ranked window of its nearest rows with a
  pointer, skipping rows already taken; a window is refilled (twice as deep) only when exhausted.
  The picks are exactly those of the round-robin greedy (ties to the lowest row), in
  O(N·m·d) for the distances plus O(N log N) per window.  The N×m distances are kept while they
  hold at most ``CACHE_MAX_VALUES`` values (256 MiB); beyond that a refill recomputes its chunk
  of centers (same product shape, so the same ranking).
* **Pools not divisible by K.**  ``m = N // K`` clusters take ``K`` rows each; the ``r = N - m·K``
  rows no center took (``r < K``) are *not* duplicated (the reference copied the first rows of the
  pool to fill the gap, so they could be selected twice): leftover row ``i`` (in row order) joins
  subset ``i·K // r``, so ``r`` distinct subsets get one extra candidate.  Every row is in exactly
  one subset.
* **Small pools.**  ``K`` is capped at the pool size (``m >= 1``).

Distances are squared Euclidean to the k-means centroids, as in the reference (centroids are not
unit vectors, so this is not the cosine order).  k-means is scikit-learn's ``KMeans`` with a fixed
``random_state``; pools above ``FIT_MAX_ROWS`` are fitted on a deterministic sample of that many
rows and every row is then assigned by the greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FIT_MAX_ROWS = 200_000
CENTER_CHUNK = 64  # centers per distance product (bounds the N × chunk temporary)
CACHE_MAX_VALUES = 64 << 20  # keep the N × m distances (256 MiB at most) for window refills


@dataclass
class EqualKMeans:
    centers: np.ndarray  # (m, d) float32 k-means centroids
    members: list[np.ndarray]  # members[c]: the K rows cluster c took, in the order taken
    leftover: np.ndarray  # rows no cluster took (fewer than K), sorted
    refills: int = 0  # window refills (diagnostics)


def fit_kmeans(x: np.ndarray, m: int, seed: int = 0, fit_max_rows: int = FIT_MAX_ROWS) -> np.ndarray:
    """k-means centroids (sklearn ``KMeans``, ``n_init="auto"``, fixed ``random_state``)."""
    from sklearn.cluster import KMeans

    n = len(x)
    fit = x
    if n > fit_max_rows:
        rng = np.random.default_rng(seed)
        fit = x[np.sort(rng.choice(n, size=fit_max_rows, replace=False))]
    km = KMeans(n_clusters=m, random_state=seed, n_init="auto").fit(fit)
    return np.asarray(km.cluster_centers_, dtype=np.float32)


class _Ranker:
    """Rows ranked by (squared distance to a center, row index), served in windows.

    Distances of a center are always computed in the same product (its chunk of centers), so a
    refill ranks exactly like the first window did.
    """

    def __init__(self, x: np.ndarray, centers: np.ndarray, chunk: int = CENTER_CHUNK) -> None:
        self.x = np.asarray(x, dtype=np.float32)
        self.centers = np.asarray(centers, dtype=np.float32)
        self.sq = np.einsum("ij,ij->i", self.x, self.x)
        self.chunk = max(1, chunk)
        self.rows = np.arange(len(self.x), dtype=np.int64)
        self._cache: dict[int, np.ndarray] = {}  # chunk start -> its distances (when small enough)
        self._cache_ok = len(self.x) * len(self.centers) <= CACHE_MAX_VALUES

    def _dist(self, lo: int, hi: int) -> np.ndarray:
        if lo in self._cache:
            return self._cache[lo]
        d = self._compute(lo, hi)
        if self._cache_ok:
            self._cache[lo] = d
        return d

    def _compute(self, lo: int, hi: int) -> np.ndarray:
        c = self.centers[lo:hi]
        d = self.x @ c.T
        d *= -2.0
        d += self.sq[:, None]
        d += np.einsum("ij,ij->i", c, c)[None, :]
        return d

    def _window(self, col: np.ndarray, start: int, stop: int) -> np.ndarray:
        n = len(col)
        stop = min(stop, n)
        if start >= stop:
            return np.zeros(0, dtype=np.int64)
        if stop >= n:
            cand = self.rows
        else:
            part = np.argpartition(col, stop - 1)[:stop]
            cand = np.flatnonzero(col <= col[part].max())  # every row tied at the boundary too
        order = cand[np.lexsort((cand, col[cand]))]
        return order[start:stop]

    def windows(self, centers: list[int], start: np.ndarray, stop: np.ndarray) -> dict[int, np.ndarray]:
        """Ranked rows [start[c], stop[c]) for each center c, computed chunk by chunk."""
        out: dict[int, np.ndarray] = {}
        wanted = sorted(set(centers))
        i = 0
        while i < len(wanted):
            lo = (wanted[i] // self.chunk) * self.chunk
            hi = min(lo + self.chunk, len(self.centers))
            d = self._dist(lo, hi)
            while i < len(wanted) and wanted[i] < hi:
                c = wanted[i]
                out[c] = self._window(d[:, c - lo], int(start[c]), int(stop[c]))
                i += 1
        return out


def balanced_assign(x: np.ndarray, centers: np.ndarray, capacity: int, window: int | None = None,
                    chunk: int = CENTER_CHUNK) -> EqualKMeans:
    """The reference's greedy round-robin: ``capacity`` rounds, each center in order takes its
    nearest untaken row.  Requires ``len(centers) * capacity <= len(x)``."""
    n, m = len(x), len(centers)
    if m * capacity > n:
        raise ValueError(f"{m} clusters x {capacity} rows exceed the pool ({n} rows)")
    ranker = _Ranker(x, centers, chunk)
    depth = np.full(m, min(n, window or max(2 * capacity, 16)), dtype=np.int64)
    done = np.zeros(m, dtype=np.int64)
    first = ranker.windows(list(range(m)), done, depth)
    wins = [first[c].tolist() for c in range(m)]  # python lists: the loop below is pure python
    ptr = [0] * m
    taken = bytearray(n)
    members = np.empty((m, capacity), dtype=np.int64)
    refills = 0
    for r in range(capacity):
        for c in range(m):
            w, p = wins[c], ptr[c]
            while True:
                if p == len(w):  # window exhausted: rank the next rows, twice as deep
                    done[c] += len(w)
                    depth[c] = min(n, done[c] * 2)
                    w = wins[c] = ranker.windows([c], done, depth)[c].tolist()
                    p = 0
                    refills += 1
                    continue
                j = w[p]
                p += 1
                if not taken[j]:
                    break
            ptr[c] = p
            taken[j] = 1
            members[c, r] = j
    taken = np.frombuffer(bytes(taken), dtype=np.uint8).astype(bool)
    return EqualKMeans(np.asarray(centers, np.float32), [members[c] for c in range(m)],
                       np.flatnonzero(~taken).astype(np.int64), refills)


def equal_size_kmeans(x: np.ndarray, subsets: int, seed: int = 0) -> EqualKMeans:
    """``m = N // subsets`` k-means clusters of exactly ``subsets`` rows each (see module doc)."""
    n = len(x)
    k = max(1, min(int(subsets), n))
    m = max(1, n // k)
    centers = fit_kmeans(x, m, seed)
    return balanced_assign(x, centers, k)


def diverse_subsets(x: np.ndarray, subsets: int, seed: int = 0) -> tuple[list[np.ndarray], EqualKMeans]:
    """The paper's K diverse subsets: subset p = the p-th member (in row order) of every cluster,
    cluster by cluster, plus at most one leftover row (see module doc).  Returns row indices."""
    n = len(x)
    if n == 0:
        return [], EqualKMeans(np.zeros((0, 0), np.float32), [], np.zeros(0, np.int64))
    k = max(1, min(int(subsets), n))
    eq = equal_size_kmeans(x, k, seed)
    by_row = np.stack([np.sort(mem) for mem in eq.members], axis=1)  # (k, m): row p = subset p
    groups = [list(map(int, by_row[p])) for p in range(k)]
    r = len(eq.leftover)
    for i, row in enumerate(eq.leftover):
        groups[(i * k) // r].append(int(row))
    return [np.asarray(g, dtype=np.int64) for g in groups], eq



def nearest_center(x: np.ndarray, centers: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (ties: lowest) and squared Euclidean distance of every row, blockwise."""
    x = np.asarray(x, dtype=np.float32)
    centers = np.asarray(centers, dtype=np.float32)
    csq = np.einsum("ij,ij->i", centers, centers)
    labels = np.empty(len(x), dtype=np.int64)
    d2 = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), block):
        xb = x[s:s + block]
        d = csq[None, :] - 2.0 * (xb @ centers.T)
        lab = np.argmin(d, axis=1)
        labels[s:s + block] = lab
        d2[s:s + block] = np.maximum(d[np.arange(len(xb)), lab] + np.einsum("ij,ij->i", xb, xb), 0.0)
    return labels, d2
