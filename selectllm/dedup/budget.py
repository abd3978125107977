"""Which join sides the dedup plan may broadcast: measured sizes against the JVM heap it has.

A broadcast join collects one side on the driver, builds a hash relation of it there and hands a
copy to every executor (in local mode: the same JVM).  The relation's size in the JVM is not the
side's size on disk: every row is an ``UnsafeRow`` (a null bitset, 8 bytes per field, the
variable-length bytes rounded up to 8), the map adds a pointer and a key slot per row, its pages
grow by doubling, and the collected rows are held while it is built.  So a side is broadcast only
when

    rows x (UnsafeRow bytes + HASH_ROW_OVERHEAD) x HASH_GROWTH  <=  budget,
    budget = BROADCAST_HEAP_SHARE x the smallest heap that holds a copy

with ``rows`` counted (every phase counts its tables) and the variable-length bytes measured;
the heap is read from the running JVM (``Runtime.maxMemory``: what ``spark.driver.memory`` gave
it) and, on a cluster, ``spark.executor.memory``.  Otherwise the join shuffles.

Spark also broadcasts on its own: the planner from *estimated* sizes
(``spark.sql.autoBroadcastJoinThreshold``) and adaptive execution from a shuffle's *measured*
row bytes (``spark.sql.adaptive.autoBroadcastJoinThreshold``).  :func:`bounded_broadcasts` turns
the first off while the dedup plan runs (an estimate is not a measurement) and bounds the second
by the same budget (divided by :data:`AQE_ROW_FACTOR`, since a shuffle's statistics know only
the rows' bytes, not their count), never above what the user set.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

BROADCAST_HEAP_SHARE = 0.10  # of the smallest heap holding a copy: what one broadcast relation may take
HASH_ROW_OVERHEAD = 40  # bytes per row besides the UnsafeRow: row pointer + length (8), key slots at load 0.5 (32)
HASH_GROWTH = 3.0  # the collected rows (1x) + the relation's pages, which grow by doubling (up to 2x)
AQE_ROW_FACTOR = 8  # adaptive execution sees a side's row bytes only: its bound = budget / this
SPARK_DEFAULT_THRESHOLD = 10 << 20  # spark.sql.autoBroadcastJoinThreshold when unset

STATIC_KEY = "spark.sql.autoBroadcastJoinThreshold"
AQE_KEY = "spark.sql.adaptive.autoBroadcastJoinThreshold"


def unsafe_row_bytes(fields: int, var_bytes: float = 0.0) -> int:
    """Bytes of one Spark ``UnsafeRow`` of ``fields`` columns with ``var_bytes`` of strings/binaries."""
    return 8 * ((fields + 63) // 64) + 8 * fields + 8 * math.ceil(var_bytes / 8)


def parse_size(value: str | None, default: int) -> int:
    """Spark's memory syntax (``4g``, ``512m``, ``1024k``, bytes) -> bytes; ``default`` when unset/odd."""
    if not value:
        return default
    v = str(value).strip().lower().removesuffix("b")
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    try:
        if v and v[-1] in units:
            return int(float(v[:-1]) * units[v[-1]])
        return int(v)
    except ValueError:
        return default


def heap_bytes(spark) -> int:
    """The smallest JVM heap that holds a broadcast copy: the driver's (read from its JVM), and on a
    cluster also ``spark.executor.memory`` (default 1g).  Spark Connect: ``spark.driver.memory``."""
    try:
        conf = spark.sparkContext.getConf()
    except Exception:  # Spark Connect: no SparkContext here
        conf = None
    try:
        driver = int(spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory())
    except Exception:  # no py4j gateway (Spark Connect): what the configuration says
        driver = parse_size(conf.get("spark.driver.memory") if conf else None, 1 << 30)
    master = conf.get("spark.master", "local") if conf else "local"
    from selectllm.engines import is_local_master

    if is_local_master(master):  # one JVM: driver = executor
        return driver
    return min(driver, parse_size(conf.get("spark.executor.memory"), 1 << 30))


@dataclass
class BroadcastBudget:
    """Decides each join side: broadcast when its measured in-JVM size fits ``budget_bytes``.

    ``joins`` records every decision (for the stage's metrics)."""

    budget_bytes: int
    heap_bytes: int
    joins: dict = field(default_factory=dict)

    @classmethod
    def of(cls, spark, budget_bytes: int | None = None) -> "BroadcastBudget":
        """From the running JVM's heap; ``budget_bytes`` overrides the derived budget (tests, tuning)."""
        heap = heap_bytes(spark)
        budget = int(heap * BROADCAST_HEAP_SHARE) if budget_bytes is None else int(budget_bytes)
        return cls(budget_bytes=max(0, budget), heap_bytes=heap)

    def jvm_bytes(self, rows: int, row_bytes: int) -> int:
        """What a hash relation of ``rows`` rows of ``row_bytes`` (UnsafeRow) takes in the JVM, at most."""
        return int(rows * (row_bytes + HASH_ROW_OVERHEAD) * HASH_GROWTH)

    def side(self, name: str, df, rows: int, row_bytes: int):
        """``df`` with a broadcast hint when it fits, else ``df`` as is (a shuffle join); recorded."""
        need = self.jvm_bytes(rows, row_bytes)
        fits = need <= self.budget_bytes
        self.joins[name] = {"rows": int(rows), "row_bytes": int(row_bytes), "jvm_bytes": need, "broadcast": fits}
        return df.hint("broadcast") if fits else df

    def aqe_threshold(self) -> int:
        """Adaptive execution's bound in the shuffle's row bytes (``-1``: never)."""
        bound = self.budget_bytes // AQE_ROW_FACTOR
        return bound if bound > 0 else -1

    def metrics(self) -> dict:
        return {"budget_bytes": self.budget_bytes, "heap_bytes": self.heap_bytes,
                "share": BROADCAST_HEAP_SHARE, "growth": HASH_GROWTH, "joins": dict(self.joins)}


@contextlib.contextmanager
def bounded_broadcasts(spark, budget: BroadcastBudget):
    """While the block runs: no broadcast from estimates, adaptive execution's broadcasts bounded by
    ``budget`` (and by what the user set, whichever is lower).  The settings are restored after.

    Yields the adaptive threshold in force (bytes, ``-1``: off)."""
    user_static = parse_size(spark.conf.get(STATIC_KEY, None), SPARK_DEFAULT_THRESHOLD)
    user_aqe = parse_size(spark.conf.get(AQE_KEY, None), user_static)
    bound = budget.aqe_threshold()
    aqe = -1 if bound < 0 or user_aqe < 0 else min(bound, user_aqe)
    old = {k: spark.conf.get(k, None) for k in (STATIC_KEY, AQE_KEY)}
    spark.conf.set(STATIC_KEY, "-1")
    spark.conf.set(AQE_KEY, str(aqe))
    try:
        yield aqe
    finally:
        for k, v in old.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)
