"""Connected components in Spark (selectllm.dedup.components) against a Python union-find."""

from __future__ import annotations

import random

import pytest

from selectllm.dedup.components import connected_components, local_stars
from union_find import union_find


def _graph() -> list[tuple[int, int]]:
    """Hand-built pieces, each on its own id range, plus repeats, reversed edges and self loops."""
    rng = random.Random(42)
    edges: list[tuple[int, int]] = []
    # a chain whose labels are shuffled (min label somewhere in the middle), 60 nodes
    labels = list(range(1000, 1060))
    rng.shuffle(labels)
    edges += [(labels[i], labels[i + 1]) for i in range(59)]
    # a plain chain 2000-2040, given backwards
    edges += [(i + 1, i) for i in range(2000, 2040)]
    # a star centred on its largest node, and one centred on its smallest
    edges += [(3050, 3000 + i) for i in range(50)]
    edges += [(4000, 4001 + i) for i in range(30)]
    # cycles (one even, one odd) and a clique
    edges += [(5000 + i, 5000 + (i + 1) % 12) for i in range(12)]
    edges += [(5100 + i, 5100 + (i + 1) % 7) for i in range(7)]
    edges += [(6000 + i, 6000 + j) for i in range(8) for j in range(i + 1, 8)]
    # two stars joined through their leaves (a "bridge" between components that look separate)
    edges += [(7000, 7000 + i) for i in range(1, 10)] + [(7100, 7100 + i) for i in range(1, 10)] + [(7009, 7105)]
    # isolated pairs, a self loop on a pair, repeated and reversed edges, huge ids
    edges += [(8000 + 2 * i, 8001 + 2 * i) for i in range(20)]
    edges += [(8000, 8000), (8001, 8000), (8000, 8001), (8000, 8001)]
    big = (1 << 62) - 5
    edges += [(big, big + 3), (big + 3, 12), (9, 9)]
    # a random sparse graph
    edges += [(10_000 + rng.randrange(400), 10_000 + rng.randrange(400)) for _ in range(300)]
    return edges


def _components(spark, edges, partitions: int, stats=None) -> dict[int, int]:
    df = spark.createDataFrame(edges, "src bigint, dst bigint").repartition(partitions)
    rows = connected_components(df, stats=stats).collect()
    got = [(r["node"], r["component"]) for r in rows]
    assert len(got) == len({n for n, _ in got}), "a node appears twice"
    return dict(got)


def test_components_match_union_find_and_do_not_depend_on_partitions(spark):
    edges = _graph()
    expected = union_find(edges)
    stats: dict = {}
    one = _components(spark, edges, 1, stats)
    # conservation: every node of the input exactly once; component = min node of the component
    assert set(one) == {n for e in edges for n in e}
    assert one == expected
    assert one[9] == 9 and one[(1 << 62) - 2] == 12
    assert {one[x] for x in range(1000, 1060)} == {1000}
    assert one[7105] == 7000 and one[3000] == 3000 and one[5106] == 5100
    assert stats["rounds"] >= 1
    assert _components(spark, edges, 5) == one  # determinism across partition counts


def test_long_shuffled_chain_converges_in_few_rounds(spark):
    rng = random.Random(9)
    labels = list(range(300))
    rng.shuffle(labels)
    edges = [(labels[i], labels[i + 1]) for i in range(299)]
    stats: dict = {}
    got = _components(spark, edges, 3, stats)
    assert got == {n: 0 for n in range(300)}
    assert stats["rounds"] <= 20  # O(log^2 n), far below n


def test_star_forest_needs_no_round_and_empty_graph(spark):
    stats: dict = {}
    got = _components(spark, [(1, 2), (1, 3), (4, 5)], 2, stats)
    assert got == {1: 1, 2: 1, 3: 1, 4: 4, 5: 4} and stats["rounds"] == 0
    df = spark.createDataFrame([(1, 2), (1, 3), (4, 5)], "src bigint, dst bigint")
    got = {r["node"]: r["component"] for r in connected_components(df, stats=stats, check_first=False).collect()}
    assert got == {1: 1, 2: 1, 3: 1, 4: 4, 5: 4} and stats["rounds"] == 1  # a round on stars changes nothing
    assert _components(spark, [], 1) == {}


def test_max_rounds_is_enforced(spark):
    edges = [(i, i + 1) for i in range(40)]
    df = spark.createDataFrame(edges, "src bigint, dst bigint")
    with pytest.raises(RuntimeError, match="did not converge"):
        connected_components(df, max_rounds=1).collect()


def test_local_stars_have_the_components_of_their_edges():
    import numpy as np

    edges = _graph()
    src, dst = (np.array(x, dtype=np.int64) for x in zip(*edges))
    root, leaf = local_stars(src, dst)
    assert len(set(leaf.tolist())) == leaf.size and not set(leaf.tolist()) & set(root.tolist())  # stars
    expected = union_find(edges)
    got = {int(n): int(r) for r, n in zip(root, leaf)}
    got.update({r: r for r in set(expected.values())})
    assert {n: got.get(n, n) for n in expected} == expected
    assert all(x.size == 0 for x in local_stars(np.zeros(0, np.int64), np.zeros(0, np.int64)))
