"""Connected components of an undirected graph as a Spark plan (no collect, no single task).

:func:`connected_components` takes a DataFrame of edges ``(src, dst)`` (bigint node ids; any
orientation, repeats and self loops allowed) and returns ``(node, component)`` for every node
that appears in an edge, ``component`` = the smallest node id of its component.

Algorithm: the alternating *large-star / small-star* algorithm of Kiveris et al., "Connected
Components in MapReduce and Beyond" (SoCC 2014), O(log^2 n) rounds, each a few shuffles:

* edges are kept oriented ``src < dst``, without repeats;
* **large-star**: every node ``u`` with neighbourhood ``N(u)`` links each neighbour ``v > u`` to
  ``m(u) = min(N(u) + {u})``;
* **small-star**: every node ``u`` links itself and each smaller neighbour to the smallest of
  them.

Both steps keep the connected components unchanged.  The loop stops when the edges form a
*star forest* - no node has two parents and no parent is also a child - which is checked
exactly (one aggregate per round): then every star is a whole component, its centre (``src``)
being its smallest node.  Each round's edges are checkpointed (``checkpoint`` when the
SparkContext has a checkpoint directory, else ``localCheckpoint``) so the lineage stays short.
"""

from __future__ import annotations

import numpy as np

MAX_ROUNDS = 100  # O(log^2 n): a 10^12-node chain needs far fewer


def cut_lineage(df, eager: bool = True):
    """Cut the lineage: ``checkpoint`` with a checkpoint directory, else ``localCheckpoint``.

    ``eager=False``: materialized by the next action on the result (one job instead of two).
    """
    from selectllm.engines import cache_level

    sc = df.sparkSession.sparkContext
    if sc.getCheckpointDir():
        return df.checkpoint(eager=eager)
    return df.localCheckpoint(eager=eager, storageLevel=cache_level())


def local_stars(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of one task's edges as stars ``(root, node)``, root = smallest node.

    Pure numpy/scipy, for the edges one task already holds (e.g. the verified pairs of its
    buckets): the stars have the same components as the edges, and feeding them to
    :func:`connected_components` instead of the raw edges leaves the Spark rounds only the
    merging of components across tasks.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    src, dst = np.asarray(src, np.int64), np.asarray(dst, np.int64)
    if src.size == 0:
        return src.copy(), dst.copy()
    nodes, idx = np.unique(np.concatenate((src, dst)), return_inverse=True)
    k = src.size
    graph = coo_matrix((np.ones(k, np.int8), (idx[:k], idx[k:])), shape=(nodes.size, nodes.size))
    _, label = scipy_components(graph, directed=False)
    root = np.full(label.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(root, label, nodes)
    r = root[label]
    leaf = r != nodes
    return r[leaf], nodes[leaf]


def _oriented(edges):
    from pyspark.sql import functions as F

    return (edges.select(F.least("src", "dst").alias("src"), F.greatest("src", "dst").alias("dst"))
            .where(F.col("src") != F.col("dst")).distinct())


def _large_star(ee):
    """Each neighbour ``v > u`` of ``u`` -> edge ``(m(u), v)``; one window, repeats left in."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    sym = ee.select(F.col("src").alias("u"), F.col("dst").alias("v")).unionByName(
        ee.select(F.col("dst").alias("u"), F.col("src").alias("v")))
    m = F.least(F.min("v").over(Window.partitionBy("u")), F.col("u"))
    return sym.withColumn("m", m).where(F.col("v") > F.col("u")).select(
        F.col("m").alias("src"), F.col("v").alias("dst"))  # m <= u < v


def _small_star(ee):
    """Each ``u`` (as ``dst``) and its smaller neighbours -> edges to the smallest of them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    m = F.min("src").over(Window.partitionBy("dst"))
    return (ee.withColumn("m", m)
            .select(F.col("m").alias("src"), F.explode(F.array("src", "dst")).alias("dst"))
            .where(F.col("src") != F.col("dst")).distinct())


def _is_star_forest(ee) -> bool:
    from pyspark.sql import functions as F

    roles = ee.select(F.col("src").alias("n"), F.lit(1).alias("parent"), F.lit(0).alias("child")).unionByName(
        ee.select(F.col("dst").alias("n"), F.lit(0).alias("parent"), F.lit(1).alias("child")))
    bad = (roles.groupBy("n").agg(F.max("parent").alias("p"), F.sum("child").alias("c"))
           .where((F.col("c") > 1) | ((F.col("p") == 1) & (F.col("c") > 0))))
    return bad.limit(1).count() == 0


def connected_components(edges, max_rounds: int = MAX_ROUNDS, stats: dict | None = None,
                         simple: bool = False, check_first: bool = True):
    """``(node bigint, component bigint)`` of every node in ``edges`` (``component`` = min node).

    A node seen only in self loops is its own component.  ``simple=True`` promises that the
    edges are already ``src < dst`` without repeats (no self loops): one shuffle and one job less.

    ``check_first=False`` skips the star-forest check of the input and runs a round at once
    (one job less when the input is known to need rounds, e.g. stars from several tasks; a round
    on a star forest leaves it unchanged).

    ``stats``, when given, receives ``rounds`` (large-star + small-star rounds run).
    Every round is checkpointed (computed once, lineage cut); the result is a projection of the last.
    """
    from pyspark.sql import functions as F

    edges = edges.select(F.col("src").cast("bigint"), F.col("dst").cast("bigint"))
    # each round's edges are checkpointed lazily: the star-forest check is the job computing them
    ee = cut_lineage(edges if simple else _oriented(edges), eager=False)
    loops = edges.where(F.col("src") == F.col("dst")).select(F.col("src").alias("node")).distinct()
    rounds = 0
    while (rounds == 0 and not check_first) or not _is_star_forest(ee):
        if rounds >= max_rounds:
            raise RuntimeError(f"connected components did not converge in {max_rounds} rounds")
        ee = cut_lineage(_small_star(_large_star(ee)), eager=False)
        rounds += 1
    if stats is not None:
        stats["rounds"] = rounds
    centres = ee.select(F.col("src").alias("node"), F.col("src").alias("component")).distinct()
    found = ee.select(F.col("dst").alias("node"), F.col("src").alias("component")).unionByName(centres)
    if simple or loops.isEmpty():
        return found
    alone = loops.join(found, "node", "left_anti")  # nodes seen only in self loops
    return found.unionByName(alone.select("node", F.col("node").alias("component")))
