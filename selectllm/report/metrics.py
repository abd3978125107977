"""Pure maths of the report: how well a selection covers the pool, and how diverse it is.

Plain functions of numpy arrays (rows = embeddings), used by the ``report`` stage and by
``selectllm compare``.  Distances are cosine distances ``1 - dot`` of L2-normalized rows, in
[0, 2].  Nothing here ever builds an n x n matrix: coverage works on blocks of ``chunk`` rows.
"""

from __future__ import annotations

import math

import numpy as np

CHUNK = 8192
COVERAGE_MAX_ROWS = 200_000
DIVERSITY_MAX_ROWS = 5_000


def normalize(x: np.ndarray, inplace: bool = False) -> np.ndarray:
    """float32 copy with unit-length rows (zero rows stay zero); ``inplace``: scale ``x`` itself
    when it is float32 already (no second copy of a large sample)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of row vectors, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    if inplace:
        x /= norms
        return x
    return x / norms


def sample_indices(n: int, k: int, seed: int = 0) -> np.ndarray:
    """Deterministic sorted sample of ``min(n, k)`` distinct row indices out of ``n``."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)


def nearest_distance(pool: np.ndarray, selected: np.ndarray, chunk: int = CHUNK,
                     rows: np.ndarray | None = None) -> np.ndarray:
    """Cosine distance from every pool row (or the pool rows numbered ``rows``) to its nearest
    selected row (float32, one per row).

    Blockwise: at most ``chunk x chunk`` dot products are held at once, and the pool is
    normalized a block at a time (never copied whole).
    """
    pool = np.asarray(pool)
    selected = normalize(selected)
    if pool.shape[0] and selected.shape[0] and pool.shape[1] != selected.shape[1]:
        raise ValueError(f"dimension mismatch: pool {pool.shape[1]} vs selected {selected.shape[1]}")
    n = pool.shape[0] if rows is None else len(rows)
    out = np.empty(n, dtype=np.float32)
    if selected.shape[0] == 0:
        out.fill(np.nan)
        return out
    for i in range(0, n, chunk):
        block = normalize(pool[i : i + chunk] if rows is None else pool[rows[i : i + chunk]])
        best = np.full(block.shape[0], -np.inf, dtype=np.float32)
        for j in range(0, selected.shape[0], chunk):
            sims = block @ selected[j : j + chunk].T
            np.maximum(best, sims.max(axis=1), out=best)
        out[i : i + chunk] = np.clip(1.0 - best, 0.0, 2.0)
    return out


def distance_summary(d: np.ndarray) -> dict:
    """max / p99 / mean of nearest-selected distances (as :func:`coverage` reports them)."""
    d = np.asarray(d, dtype=np.float64)
    return {"max": float(d.max()), "p99": float(np.percentile(d, 99)), "mean": float(d.mean())}


def coverage(
    pool: np.ndarray,
    selected: np.ndarray,
    chunk: int = CHUNK,
    max_rows: int = COVERAGE_MAX_ROWS,
    seed: int = 0,
) -> dict:
    """How far the pool is from the selection: max / p99 / mean nearest-selected cosine distance.

    On more than ``max_rows`` pool rows, a deterministic sample of ``max_rows`` rows is used and
    ``sampled`` says so.  Values are None when the pool or the selection is empty.
    """
    n = int(np.asarray(pool).shape[0])
    idx = sample_indices(n, max_rows, seed)
    sampled = len(idx) < n
    rows = np.asarray(pool)[idx] if sampled else pool
    result = {"rows": int(len(idx)), "pool_rows": n, "sampled": sampled}
    if n == 0 or np.asarray(selected).shape[0] == 0:
        return {"max": None, "p99": None, "mean": None, **result}
    return {**distance_summary(nearest_distance(rows, selected, chunk=chunk)), **result}


def diversity(selected: np.ndarray) -> float | None:
    """Mean pairwise cosine distance over all distinct pairs of the selection (None if < 2 rows).

    Exact in O(n * d) for any n, so no sampling is needed:
    ``sum_{i != j} x_i . x_j = |sum_i x_i|^2 - sum_i |x_i|^2``.  ``diversity_sampled`` is the
    brute-force estimate on a sample (used by the tests as a cross-check).
    """
    x = normalize(selected).astype(np.float64)
    n = x.shape[0]
    if n < 2:
        return None
    s = x.sum(axis=0)
    off_diag = float(s @ s) - float(np.einsum("ij,ij->", x, x))
    mean_sim = off_diag / (n * (n - 1))
    return float(min(2.0, max(0.0, 1.0 - mean_sim)))


def diversity_sampled(selected: np.ndarray, max_rows: int = DIVERSITY_MAX_ROWS, seed: int = 0) -> float | None:
    """Mean pairwise cosine distance by brute force on a deterministic sample of ``max_rows`` rows."""
    x = normalize(selected)
    x = x[sample_indices(x.shape[0], max_rows, seed)]
    n = x.shape[0]
    if n < 2:
        return None
    total = 0.0
    for i in range(0, n, CHUNK):
        sims = x[i : i + CHUNK] @ x.T
        total += float(np.clip(1.0 - sims, 0.0, 2.0).astype(np.float64).sum())
    # the diagonal contributes 1 - |x_i|^2 = 0 for unit rows (and 1 for zero rows: remove it)
    diag = float(np.clip(1.0 - np.einsum("ij,ij->i", x, x), 0.0, 2.0).sum())
    return float((total - diag) / (n * (n - 1)))


def size_stats(sizes: np.ndarray) -> dict:
    sizes = np.asarray(sizes)
    if sizes.size == 0:
        return {"size_min": None, "size_median": None, "size_max": None}
    return {
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
    }


def finite_or_none(v: float | None) -> float | None:
    """JSON has no NaN/inf: map them to None."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
