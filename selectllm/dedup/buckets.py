"""LSH buckets in numpy: which rows share a band key, and which of their pairs to verify.

Two pure functions the Spark plan (:mod:`selectllm.dedup.near`) runs inside ``mapInArrow``:

* :func:`shared_buckets` - from the ``(key, node)`` rows of one hash partition of band keys, the
  members of every bucket with two rows or more, with the bucket's size and its *centre* (the
  member with the smallest ``splitmix64(node ^ key)``: a fixed pseudo-random member, different
  for every band of the same rows).  Sorting one partition in numpy replaces a Spark
  aggregation, a join back and a self-join.
* :func:`bucket_edges` - the pairs of a bucket worth verifying.  Checking all ``m(m-1)/2`` pairs
  of a bucket is what makes LSH slow on real logs, where templated instructions fill buckets
  with hundreds of near-identical rows.  Only the *connected components* of the verified graph
  matter, so a bucket is verified in *pivot rounds*: its smallest unassigned member is compared
  with every other unassigned member, and those at or above the threshold join its group (a
  star, all verified edges).  Then every pair **across** two groups is checked (unless a round
  checked it already).  A pair inside
  a group adds no connection (the group is already connected), a pair across groups is
  checked, so the components are exactly those of verifying every pair - with ``m - 1``
  checks instead of ``m(m-1)/2`` for a bucket of near-identical rows.  A pair across groups is
  also skipped when its two similarities to the bucket's first pivot differ by more than
  ``1 - threshold``: Jaccard distance (true, or the MinHash fraction of unequal values) is a
  metric, so such a pair is below the threshold for sure.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from selectllm.text.minhash import splitmix64

Similarity = Callable[[np.ndarray, np.ndarray], np.ndarray]
PAIRS_PER_PASS = 1 << 21  # member pairs generated per numpy pass across groups


def shared_buckets(keys: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(key, node, size, centre)`` of the members of buckets with 2+ rows, by (key, node).

    ``keys``/``nodes``: int64 arrays, one row per (row, band); a key is unique to its band
    (band keys are salted), so the key alone names the bucket.
    """
    keys = np.asarray(keys, dtype=np.int64)
    nodes = np.asarray(nodes, dtype=np.int64)
    # most keys are unique: find the repeated ones with a plain sort, order only their rows
    s = np.sort(keys)
    rep = s[1:][s[1:] == s[:-1]]
    if rep.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    rep = rep[np.concatenate(([True], rep[1:] != rep[:-1]))]
    shared = rep[np.minimum(np.searchsorted(rep, keys), rep.size - 1)] == keys
    keys, nodes = keys[shared], nodes[shared]
    order = np.lexsort((nodes, keys))
    k, n = keys[order], nodes[order]
    start = np.concatenate(([True], k[1:] != k[:-1]))
    group = np.cumsum(start) - 1
    size = np.bincount(group)[group]
    # centre: the member with the smallest splitmix64(node ^ key), per bucket
    h = splitmix64((n ^ k).view(np.uint64))
    by = np.lexsort((h, group))
    first = np.concatenate(([True], group[by][1:] != group[by][:-1]))
    centre_of_group = np.empty(group.max() + 1, dtype=np.int64)
    centre_of_group[group[by][first]] = n[by][first]
    return k, n, size, centre_of_group[group]


def bucket_edges(bounds: np.ndarray, sim: Similarity, threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Verified edges ``(i, j, s)`` (member indices, ``i < j``, ``s >= threshold``) of buckets
    ``[bounds[b], bounds[b+1])`` and the number of pairs checked.

    Members of a bucket must be in node order (the pivot of a round is its smallest unassigned
    member, so the result does not depend on how rows arrived).  ``sim(i, j)`` returns the
    similarities of the member pairs ``(i[k], j[k])``.  The components of the returned edges,
    per bucket, are those of all pairs at or above ``threshold`` (see module doc).  Each round
    runs over all buckets at once; there are as many rounds as groups in the most mixed bucket.
    """
    bounds = np.asarray(bounds, dtype=np.int64)
    sizes = np.diff(bounds)
    bucket = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    group = np.arange(bounds[-1] if len(bounds) else 0, dtype=np.int64)  # pivot of each member
    out_i: list[np.ndarray] = [np.zeros(0, np.int64)]
    out_j: list[np.ndarray] = [np.zeros(0, np.int64)]
    out_s: list[np.ndarray] = [np.zeros(0)]
    checks = 0

    def check(i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nonlocal checks
        s = sim(i, j) if i.size else np.zeros(0)
        checks += int(i.size)
        hit = s >= threshold
        out_i.append(i[hit])
        out_j.append(j[hit])
        out_s.append(s[hit])
        return hit, s

    # pivot rounds: the first unassigned member of each bucket against the other unassigned ones
    active = group[sizes[bucket] >= 2]
    to_first = np.ones(group.size)  # similarity to the bucket's first pivot (1.0 for itself)
    first_round = True
    while active.size:
        b = bucket[active]
        first = np.concatenate(([True], b[1:] != b[:-1]))
        pivot = active[first][np.cumsum(first) - 1]
        rest = ~first
        i, j = pivot[rest], active[rest]
        joined, s = check(i, j)
        if first_round:
            to_first[j] = s
            first_round = False
        group[j[joined]] = i[joined]
        active = j[~joined]
        active = active[np.bincount(bucket[active], minlength=len(sizes))[bucket[active]] >= 2]

    # every pair across two groups of the same bucket, except those a round checked already: a
    # pivot p met every member whose group's pivot comes after p (it was still unassigned)
    is_pivot = group == np.arange(group.size)
    pivots = np.bincount(bucket[is_pivot], minlength=len(sizes))
    for m in np.unique(sizes[pivots >= 2]):
        ti, tj = np.triu_indices(int(m), 1)
        starts = bounds[:-1][(pivots >= 2) & (sizes == m)]
        step = max(1, PAIRS_PER_PASS // len(ti))  # bounded memory, whatever the bucket sizes
        for c in range(0, len(starts), step):
            base = starts[c:c + step, None]
            x, y = (base + ti).ravel(), (base + tj).ravel()
            todo = (group[x] != group[y]) & ~(is_pivot[x] & (group[y] > x)) & ~(is_pivot[y] & (group[x] > y))
            # Jaccard distance is a metric: 1 - J(x, y) >= |J(p, x) - J(p, y)| for the first pivot p,
            # so a pair whose similarities to p differ by more than 1 - threshold is below it
            todo &= np.abs(to_first[x] - to_first[y]) <= (1.0 - threshold) + 1e-9
            check(x[todo], y[todo])
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s), checks
