"""Packed shuffles (selectllm.dedup.route): our Murmur3 is Spark's, route values land where meant."""

from __future__ import annotations

import numpy as np

from selectllm.dedup.route import route_values, spark_hash_long, split_by_destination


def test_hash_is_sparks_and_route_values_reach_their_partition(spark):
    from pyspark.sql import functions as F

    values = [0, 1, 2, 7, 42, -1, -123456789, (1 << 40) + 5, (1 << 63) - 1, -(1 << 63)]
    got = spark.createDataFrame([(v,) for v in values], "v bigint").select("v", F.hash("v").alias("h")).collect()
    assert {r["v"]: r["h"] for r in got} == {v: spark_hash_long(v) for v in values}
    for parts in (1, 3, 8, 13):
        route = route_values(parts)
        df = spark.createDataFrame([(v,) for v in route], "v bigint").repartition(parts, "v")
        placed = {r["v"]: r["p"] for r in df.select("v", F.spark_partition_id().alias("p")).collect()}
        assert placed == {v: t for t, v in enumerate(route)}


def test_split_by_destination_keeps_every_row_once_in_order():
    dest = np.array([2, 0, 2, 1, 0, 2], dtype=np.uint64)
    vals = np.arange(6) * 10
    out = {t: cols[0].tolist() for t, cols in split_by_destination(dest, 4, vals)}
    assert out == {0: [10, 40], 1: [30], 2: [0, 20, 50]}  # partition 3 has no rows: no entry
