"""The dedup stage's phases: where their tables are kept, and what a failed phase tells the user.

* :class:`PhaseStore` keeps each phase's table and its figures.  Without a folder (library use,
  tests) a table is persisted for the call (``persist``/``localCheckpoint`` on local disks).
  With a folder (the stage's work folder, which survives a failed attempt with the same inputs
  and settings) a finished phase is written there as Parquet with a ``<phase>.json`` of its
  figures, written last: a rerun finds the phases that finished, reads them back and goes on from
  the first one that did not.
* :func:`phase` names the phase running: when Spark fails in it for lack of memory (a JVM's
  ``OutOfMemoryError``, a page or a broadcast that could not be allocated, a JVM that died, a
  Python worker killed), the stage fails with one line naming the phase, the heap it had and the
  setting to raise, and which phases a rerun will not redo.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import re
from typing import Callable

import pyarrow as pa

from selectllm.errors import UserError

DONE = "{}.json"  # a phase's figures, written after its table: present = the phase finished

# what Spark says when the memory ran out (in the JVM, or the JVM / a Python worker died of it)
JVM_OOM = re.compile(r"OutOfMemoryError|Failed to allocate a page|Not enough memory to build and broadcast"
                     r"|Unable to acquire \d+ bytes of memory|Java heap space|GC overhead limit exceeded")
JVM_GONE = re.compile(r"Answer from Java side is empty|Error while receiving|Connection refused"
                      r"|SparkContext was shut down|Cannot call methods on a stopped SparkContext")
PYTHON_GONE = re.compile(r"Python worker exited unexpectedly|worker (?:crashed|was killed)")


class PhaseStore:
    """A phase's table and figures: persisted for this call, or kept in ``folder`` across attempts."""

    def __init__(self, spark, folder_uri: str | None = None):
        self.spark, self.folder = spark, folder_uri
        self.persisted: list = []
        self.resumed: list[str] = []
        self.finished: list[str] = []
        self._fs = self._root = None
        if folder_uri:
            import fsspec

            self._fs, self._root = fsspec.core.url_to_fs(folder_uri)
            self._fs.makedirs(self._root, exist_ok=True)

    def load(self, name: str, schema: pa.Schema):
        """``(table, figures)`` of a phase a former attempt finished, else None."""
        if self._fs is None:
            return None
        done = posixpath.join(self._root, DONE.format(name))
        if not self._fs.exists(done):
            return None
        from selectllm.io import spark_read_parquet

        with self._fs.open(done, "r") as f:
            figures = json.load(f)
        self.resumed.append(name)
        self.finished.append(name)
        return spark_read_parquet(self.spark, posixpath.join(self.folder, name), schema), figures

    def keep(self, name: str, df, schema: pa.Schema, release: bool = True):
        """The phase's table, materialized: written to the folder and read back, or (no folder)
        persisted (``release``: unpersisted by :meth:`release`) or checkpointed (kept for the caller)."""
        if self._fs is None:
            from selectllm.dedup.components import cut_lineage
            from selectllm.engines import cache_level

            if release:
                df = df.persist(cache_level())
                self.persisted.append(df)
                return df
            return cut_lineage(df, eager=False)
        from selectllm.io import spark_read_parquet, spark_write_parquet

        uri = posixpath.join(self.folder, name)
        spark_write_parquet(df.select(*schema.names), uri, schema)
        return spark_read_parquet(self.spark, uri, schema)

    def done(self, name: str, figures: dict) -> dict:
        """Record that the phase finished, with its figures (what a rerun needs instead of the phase)."""
        self.finished.append(name)
        if self._fs is not None:
            path = posixpath.join(self._root, DONE.format(name))
            with self._fs.open(path + ".tmp", "w") as f:
                json.dump(figures, f)
            self._fs.mv(path + ".tmp", path)
        return figures

    def run(self, name: str, schema: pa.Schema, compute: Callable[[], tuple[object, dict]]):
        """``(table, figures)`` of the phase: from a former attempt, or ``compute()`` (which keeps
        its table with :meth:`keep` and returns its figures) under :func:`phase`."""
        found = self.load(name, schema)
        if found is not None:
            return found
        with phase(self.spark, f"near dedup, phase '{name}'", self):
            table, figures = compute()
        return table, self.done(name, figures)

    def release(self) -> None:
        for df in self.persisted:
            df.unpersist()
        self.persisted.clear()


def memory_advice(spark) -> tuple[str, str]:
    """(the heap the JVM has, the setting that raises it: twice the current value)."""
    from selectllm.dedup.budget import heap_bytes
    from selectllm.engines import is_local_master

    try:
        heap = heap_bytes(spark)
        master = spark.sparkContext.getConf().get("spark.master", "local")
    except Exception:  # the JVM is gone: what it was started with is all we know
        heap, master = 0, "local"
    key = "spark.driver.memory" if is_local_master(master) else "spark.executor.memory"
    gib = max(2, -(-2 * heap // (1 << 30)))  # twice the heap, whole GiB (maxMemory is a bit under -Xmx)
    return (f"{heap / (1 << 30):.1f} GiB" if heap else "unknown"), f"--set spark.conf.{key}={gib}g"


@contextlib.contextmanager
def phase(spark, name: str, store: PhaseStore | None = None):
    """Run a block as the named phase: a failure for lack of memory becomes one line (UserError)
    naming the phase and what to set; any other failure passes through unchanged."""
    heap_setting = memory_advice(spark)  # read while the JVM is alive
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        if JVM_OOM.search(text):
            what = f"the Spark JVM ran out of memory (heap {heap_setting[0]})"
            fix = f"rerun with {heap_setting[1]}"
        elif JVM_GONE.search(text):
            what = f"the Spark JVM stopped (most likely out of memory; heap {heap_setting[0]})"
            fix = f"rerun with {heap_setting[1]}"
        elif PYTHON_GONE.search(text):
            what = "a Spark Python worker died (most likely killed for lack of memory)"
            fix = ("rerun with fewer task slots (--set spark.master=local[1]) or more memory for the "
                   "workers (--set spark.conf.spark.executor.memoryOverhead=... on a cluster)")
        else:
            raise
        saved = ""
        if store is not None and store.folder and store.finished:
            saved = f"; the rerun resumes after the phases saved ({', '.join(store.finished)})"
        raise UserError(f"dedup: {what} in {name}: {fix}{saved} (details: logs/spark.log)") from e
