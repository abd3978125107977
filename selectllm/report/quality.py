"""How well a selection represents its pool: the figures a data team can check a selection by.

Pure functions of arrays, used by the ``report`` stage and by ``selectllm compare``.  The pool is
measured on a :class:`Reference`: a seeded sample of at most :data:`REF_ROWS` pool rows (vectors,
``source``, has-input, length), so the cost and memory do not grow with the pool.  For each
selection (:meth:`Reference.profile`), each figure labelled with what it favours:

* ``sparse_share`` -- share of the picks from the sparsest 10% of the pool (by the mean cosine
  distance to their :data:`KNN` nearest reference rows).  Random ≈ 0.10; above it, the selection
  seeks the tail (outliers, rare long rows).
* ``dense_share`` -- share of the picks from the densest 50%.  Random ≈ 0.50; below it, the bulk
  where most everyday requests sit is under-represented.
* ``topic_tvd``, ``source_tvd``, ``input_tvd``, ``length_tvd`` -- total variation distance
  (½ Σ|p - q|, 0 = the same mix, 1 = disjoint) between the selection's and the pool's mix over an
  independent topic clustering (k-means with :data:`TOPICS` clusters fitted on the reference, not
  the cluster stage's clusters), over ``source``, over has-input and over the pool's length
  quintiles.  Lower favours matching the pool (random is near the floor that sampling noise
  allows: compare with :meth:`Reference.random_band`).
* ``length_ratio`` -- median length (instruction + input characters) of the picks over the pool's.
* ``duplicate_rate`` -- share of picks with another pick at cosine similarity ≥ :data:`DUP_SIM`
  (lower is better; near-duplicates spend the budget twice).
* ``low_quality_rate`` -- share of picks the low-information rules flag (lower is better).

:meth:`Reference.random_band` gives the [min, max] of every figure over 3 seeded random selections
of the same size drawn from the reference: the spread a random selection has, the reference band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REF_ROWS = 20_000  # pool rows the figures are measured against (a seeded sample of the pool)
KNN = 10  # neighbours of the density estimate
TOPICS = 50  # clusters of the independent topic clustering
DUP_SIM = 0.9  # cosine similarity of a near-duplicate pick
DUP_MAX_ROWS = 10_000  # picks checked for duplicates (a seeded sample of the selection beyond)
BAND_SEEDS = (1, 2, 3)
BLOCK = 512  # rows per block of dot products: 512 x REF_ROWS float32 = 41 MB

FIGURES = {  # name -> what it favours (the labels the report and compare.html print)
    "sparse_share": "share of picks from the sparsest 10% of the pool (random ≈ 0.10; higher = tail-seeking)",
    "dense_share": "share of picks from the densest 50% of the pool (random ≈ 0.50; lower = bulk under-represented)",
    "topic_tvd": "mix over an independent 50-topic k-means vs the pool (TVD; lower = matches the pool)",
    "source_tvd": "mix over `source` vs the pool (TVD; lower = matches the pool)",
    "input_tvd": "share with an input vs the pool (TVD; lower = matches the pool)",
    "length_tvd": "mix over the pool's length quintiles (TVD; lower = matches the pool)",
    "length_ratio": "median length of the picks / the pool's (1 = same; higher = favours long rows)",
    "duplicate_rate": f"share of picks with another pick at cosine ≥ {DUP_SIM} (lower is better)",
    "low_quality_rate": "share of picks the low-information rules flag (lower is better)",
}


@dataclass
class Rows:
    """Rows as the figures see them: unit vectors and the columns the mixes are measured over."""

    vectors: np.ndarray  # (n, d) float32, L2-normalized
    source: np.ndarray  # (n,) object
    has_input: np.ndarray  # (n,) bool
    length: np.ndarray  # (n,) int: characters of instruction + input
    low_quality: np.ndarray | None = None  # (n,) bool, when the rules were applied

    def __len__(self) -> int:
        return len(self.vectors)

    def take(self, idx: np.ndarray) -> "Rows":
        return Rows(self.vectors[idx], self.source[idx], self.has_input[idx], self.length[idx],
                    None if self.low_quality is None else self.low_quality[idx])


def rows_of(vectors: np.ndarray, records: list[dict], rules=None) -> Rows:
    """:class:`Rows` of some records (``instruction``, ``input``, ``source``; their vectors in the
    same order), the low-information rules applied to their instructions: ``rules`` (a
    :class:`selectllm.text.quality.QualityRules`), or the defaults when the filter is off (the
    rate is then what the filter would have removed)."""
    from selectllm.text.quality import QualityRules, low_quality_rule

    rules = rules or QualityRules()
    return Rows(vectors, np.asarray([r.get("source") or "" for r in records], dtype=object),
                np.asarray([bool(r.get("input")) for r in records], dtype=bool),
                np.asarray([len(r.get("instruction") or "") + len(r.get("input") or "") for r in records], dtype=np.int64),
                np.asarray([low_quality_rule(r.get("instruction") or "", rules) is not None for r in records], dtype=bool))


def tvd(a: np.ndarray, b: np.ndarray) -> float | None:
    """Total variation distance between the distributions of two label arrays."""
    if len(a) == 0 or len(b) == 0:
        return None
    cats, inv = np.unique(np.concatenate([np.asarray(a, dtype=str), np.asarray(b, dtype=str)]), return_inverse=True)
    p = np.bincount(inv[: len(a)], minlength=len(cats)) / len(a)
    q = np.bincount(inv[len(a):], minlength=len(cats)) / len(b)
    return float(0.5 * np.abs(p - q).sum())


def knn_distance(ref: np.ndarray, x: np.ndarray, k: int = KNN) -> np.ndarray:
    """Mean cosine distance of each row of ``x`` to its ``k`` nearest rows of ``ref``, itself
    left out (a row at distance ~0 among the k+1 nearest is taken to be itself)."""
    k = max(1, min(k, len(ref) - 1))
    out = np.empty(len(x), dtype=np.float64)
    for i in range(0, len(x), BLOCK):
        d = 1.0 - x[i:i + BLOCK] @ ref.T
        near = np.sort(np.partition(d, k, axis=1)[:, : k + 1], axis=1)
        self_hit = near[:, 0] < 1e-5
        out[i:i + BLOCK] = np.where(self_hit, near[:, 1:].mean(axis=1), near[:, :k].mean(axis=1))
    return out


def duplicate_rate(x: np.ndarray, sim: float = DUP_SIM, max_rows: int = DUP_MAX_ROWS, seed: int = 0) -> float | None:
    """Share of rows (a seeded sample of ``max_rows`` of them) with another row of ``x`` at cosine ≥ ``sim``."""
    n = len(x)
    if n < 2:
        return None
    idx = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
    hits = 0
    for i in range(0, len(idx), BLOCK):
        rows = idx[i:i + BLOCK]
        s = x[rows] @ x.T
        s[np.arange(len(rows)), rows] = -1.0  # not itself
        hits += int((s.max(axis=1) >= sim).sum())
    return hits / len(idx)


class Reference:
    """The pool as the figures measure it (see the module doc): density thresholds, topics, bins."""

    def __init__(self, rows: Rows, topics: int = TOPICS, seed: int = 0):
        from sklearn.cluster import KMeans

        self.rows, self.seed = rows, seed
        self.knn = knn_distance(rows.vectors, rows.vectors)
        self.sparse_cut = float(np.quantile(self.knn, 0.9))
        self.dense_cut = float(np.quantile(self.knn, 0.5))
        m = max(1, min(topics, len(rows) // 5))
        self.topics = KMeans(n_clusters=m, n_init=1, random_state=seed).fit(rows.vectors.astype(np.float64))
        self.topic = self.topics.labels_
        self.length_edges = np.unique(np.quantile(rows.length, [0.2, 0.4, 0.6, 0.8]))

    def profile(self, sel: Rows) -> dict:
        """Every figure of :data:`FIGURES` for one selection (None where it cannot be measured)."""
        ref = self.rows
        if len(sel) == 0 or len(ref) < 2:
            return {name: None for name in FIGURES}
        knn = knn_distance(ref.vectors, sel.vectors)
        topic = self.topics.predict(sel.vectors.astype(np.float64))
        bins = lambda length: np.searchsorted(self.length_edges, length, side="right")  # noqa: E731
        med = float(np.median(ref.length))
        return {
            "sparse_share": float(np.mean(knn >= self.sparse_cut)),
            "dense_share": float(np.mean(knn <= self.dense_cut)),
            "topic_tvd": tvd(self.topic, topic),
            "source_tvd": tvd(ref.source, sel.source),
            "input_tvd": tvd(ref.has_input, sel.has_input),
            "length_tvd": tvd(bins(ref.length), bins(sel.length)),
            "length_ratio": float(np.median(sel.length)) / med if med > 0 else None,
            "duplicate_rate": duplicate_rate(sel.vectors),
            "low_quality_rate": None if sel.low_quality is None else float(np.mean(sel.low_quality)),
        }

    def draws(self, size: int, seeds=BAND_SEEDS) -> list[np.ndarray]:
        """Seeded random selections of ``size`` reference rows (row numbers), one per seed."""
        size = min(int(size), len(self.rows))
        return [np.sort(np.random.default_rng(s).choice(len(self.rows), size, replace=False)) for s in seeds] if size else []

    def random_band(self, size: int, seeds=BAND_SEEDS) -> dict:
        """[min, max] of every figure over seeded random selections of ``size`` reference rows."""
        runs = [self.profile(self.rows.take(d)) for d in self.draws(size, seeds)]
        if not runs:
            return {}
        out = {}
        for name in FIGURES:
            values = [r[name] for r in runs]
            out[name] = None if any(v is None for v in values) else [min(values), max(values)]
        return out
