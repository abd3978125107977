"""LSH bucket helpers (selectllm.dedup.buckets): pure numpy, checked against brute force."""

from __future__ import annotations

import numpy as np

from selectllm.dedup.buckets import bucket_edges, shared_buckets
from union_find import union_find


def _components(n: int, edges) -> list[int]:
    roots = union_find(edges)
    return [roots.get(x, x) for x in range(n)]


def test_shared_buckets_keeps_buckets_of_two_or_more_with_a_fixed_centre():
    keys = np.array([7, 3, 7, 5, 7, 3, 9], dtype=np.int64)
    nodes = np.array([40, 11, 10, 99, 20, 12, 1], dtype=np.int64)
    k, n, size, centre = shared_buckets(keys, nodes)
    assert k.tolist() == [3, 3, 7, 7, 7] and n.tolist() == [11, 12, 10, 20, 40]
    assert size.tolist() == [2, 2, 3, 3, 3]
    assert centre[0] == centre[1] in (11, 12) and centre[2] == centre[3] == centre[4] in (10, 20, 40)
    # the order rows arrive in changes nothing
    perm = np.random.default_rng(0).permutation(len(keys))
    again = shared_buckets(keys[perm], nodes[perm])
    assert all(np.array_equal(x, y) for x, y in zip(again, (k, n, size, centre)))
    assert all(len(x) == 0 for x in shared_buckets(np.array([1, 2]), np.array([5, 6])))


def test_bucket_edges_give_the_components_of_all_pairs_with_fewer_checks():
    rng = np.random.default_rng(3)
    for trial in range(60):
        sizes = rng.integers(1, 40, size=rng.integers(1, 12))
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        m = int(bounds[-1])
        # members are points on a line, grouped in a few tight clumps; sim falls with distance
        pos = rng.choice(rng.uniform(0, 10, size=rng.integers(1, 6)), size=m) + rng.normal(0, 0.05, size=m)
        if trial % 3 == 0:
            pos = rng.uniform(0, 10, size=m)  # chains and loose groups

        def sim(i, j):
            return np.maximum(0.0, 1.0 - np.abs(pos[i] - pos[j]) / 2.0)

        i, j, s, checks = bucket_edges(bounds, sim, 0.8)
        assert np.all(i < j) and np.all(s >= 0.8) and np.allclose(s, sim(i, j))
        bucket_of = np.repeat(np.arange(len(sizes)), sizes)
        assert np.array_equal(bucket_of[i], bucket_of[j])  # never across buckets
        brute = [(a, b) for lo, hi in zip(bounds[:-1], bounds[1:]) for a in range(lo, hi)
                 for b in range(a + 1, hi) if sim(np.array([a]), np.array([b]))[0] >= 0.8]
        assert _components(m, zip(i.tolist(), j.tolist())) == _components(m, brute)
        assert checks <= int((sizes * (sizes - 1) // 2).sum())  # never more than all pairs


def test_bucket_of_near_identical_rows_is_linear():
    bounds = np.array([0, 500])
    i, j, s, checks = bucket_edges(bounds, lambda a, b: np.full(a.size, 0.95), 0.8)
    assert checks == 499 and len(i) == 499 and set(i.tolist()) == {0}
    # all different: every pair is checked, no edge
    i, j, s, checks = bucket_edges(np.array([0, 30]), lambda a, b: np.zeros(a.size), 0.8)
    assert checks == 30 * 29 // 2 and len(i) == 0


def test_pairs_across_groups_in_small_passes_give_the_same_edges(monkeypatch):
    import selectllm.dedup.buckets as buckets

    rng = np.random.default_rng(9)
    sizes = rng.integers(2, 30, size=40)
    bounds = np.concatenate(([0], np.cumsum(sizes)))
    pos = rng.uniform(0, 20, size=int(bounds[-1]))

    def sim(i, j):
        return np.maximum(0.0, 1.0 - np.abs(pos[i] - pos[j]) / 2.0)

    whole = bucket_edges(bounds, sim, 0.8)
    monkeypatch.setattr(buckets, "PAIRS_PER_PASS", 7)
    parts = bucket_edges(bounds, sim, 0.8)
    key = lambda r: sorted(zip(r[0].tolist(), r[1].tolist()))  # noqa: E731
    assert key(parts) == key(whole) and parts[3] == whole[3] and len(whole[0]) > 0


def test_pairs_far_apart_from_the_first_pivot_are_not_checked():
    # a chain of 10 points 0.3 apart: sim 0.85 between neighbours, falling with distance (a metric)
    pos = np.arange(10) * 0.3
    seen = []

    def sim(i, j):
        seen.extend(zip(i.tolist(), j.tolist()))
        return np.maximum(0.0, 1.0 - np.abs(pos[i] - pos[j]) / 2.0)

    i, j, s, checks = bucket_edges(np.array([0, 10]), sim, 0.8)
    assert _components(10, zip(i.tolist(), j.tolist())) == [0] * 10  # one chain, as with all pairs
    # pivot rounds: 9 + 7 + 5 + 3 + 1 checks, groups {0,1} {2,3} ... {8,9}.  Of the 20 pairs across
    # groups left, only those whose similarities to point 0 differ by <= 0.2 can reach 0.8:
    # (1,2) (3,4) (5,6) (7,8), and (7,9) (both are 0 from point 0).  All pairs would be 45 checks.
    assert checks == len(seen) == 25 + 5


def test_verification_compares_sets_in_passes_of_bounded_size():
    from selectllm.dedup.near import _chunked_similarity, _gather
    from selectllm.text.minhash import jaccard_sets

    rng = np.random.default_rng(5)
    sets = [np.unique(rng.integers(0, 60, size=rng.integers(0, 40))).astype(np.uint32) for _ in range(50)]
    offsets = np.concatenate(([0], np.cumsum([len(x) for x in sets]))).astype(np.int64)
    values = np.concatenate(sets)
    i, j = rng.integers(0, 50, size=300), rng.integers(0, 50, size=300)
    passes = []

    def sim(a, b):
        passes.append(int(a[0][-1] + b[0][-1]))  # set values compared in this pass, both sides
        return jaccard_sets(*a, *b)

    whole = jaccard_sets(*_gather(offsets, values, i), *_gather(offsets, values, j))
    np.testing.assert_array_equal(_chunked_similarity(sim, offsets, values, max_values=100)(i, j), whole)
    assert len(passes) > 50 and sum(passes) == int((np.diff(offsets)[i] + np.diff(offsets)[j]).sum())
    assert max(passes) <= 100  # no pair alone exceeds 100 values here
    expected = [set(sets[a]) | set(sets[b]) for a, b in zip(i, j)]
    assert np.allclose(whole, [len(set(sets[a]) & set(sets[b])) / max(len(u), 1) for (a, b), u in zip(zip(i, j), expected)])
    assert _chunked_similarity(sim, offsets, values)(np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0
