"""Packed shuffles: many numpy rows travel through a Spark shuffle as a few binary rows.

Shuffling millions of tiny rows (a band key and a node id, 16 bytes) costs Spark far more than
the bytes: each row is built, serialized, hashed, read back and converted to Arrow one by one.
When the receiving side is numpy anyway, a map task can group its rows by destination partition
itself and send one binary row per destination.  The destination is named by a *route value*
``r`` chosen so that Spark's ``repartition(parts, col)`` sends ``r`` to partition ``t``
exactly: Spark places a bigint ``v`` in partition ``pmod(murmur3_x86_32(v, seed=42), parts)``
(its ``hash()`` SQL function, the hash of ``HashPartitioning``), reproduced here.  If a Spark
version ever hashed differently, rows would still meet their partners (equal route values
always share a partition); only the balance between tasks would suffer.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

_M32 = 0xFFFFFFFF


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _mix(h1: int, k1: int) -> int:
    k1 = (k1 * 0xCC9E2D51) & _M32
    k1 = (_rotl(k1, 15) * 0x1B873593) & _M32
    h1 = _rotl(h1 ^ k1, 13)
    return (h1 * 5 + 0xE6546B64) & _M32


def spark_hash_long(value: int, seed: int = 42) -> int:
    """Spark's ``hash(bigint)``: Murmur3_x86_32 of the long's low then high 32 bits (signed int)."""
    v = value & 0xFFFFFFFFFFFFFFFF
    h = _mix(_mix(seed & _M32, v & _M32), v >> 32) ^ 8
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h - (1 << 32) if h >= 1 << 31 else h


def spark_partition(value: int, parts: int) -> int:
    """The partition of a bigint ``value`` under ``repartition(parts, col)``."""
    return spark_hash_long(value) % parts  # Python's % is already pmod


@lru_cache(maxsize=64)
def route_values(parts: int) -> tuple[int, ...]:
    """``r[t]``: the smallest bigint >= 0 that ``repartition(parts, col)`` sends to partition ``t``."""
    found: dict[int, int] = {}
    v = 0
    while len(found) < parts:
        found.setdefault(spark_partition(v, parts), v)
        v += 1
    return tuple(found[t] for t in range(parts))


def split_by_destination(dest: np.ndarray, parts: int, *columns: np.ndarray):
    """Per destination partition ``t`` with rows: ``(t, [column[dest == t] ...])``, in row order."""
    order = np.argsort(dest, kind="stable")
    bounds = np.searchsorted(dest[order], np.arange(parts + 1))
    for t in range(parts):
        a, b = bounds[t], bounds[t + 1]
        if b > a:
            yield t, [c[order[a:b]] for c in columns]
