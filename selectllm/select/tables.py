"""What the selection strategies read, through the select stage's declared inputs
(``rows`` = dedup's kept rows, ``assignments`` / ``centers`` = the cluster stage's, ``vectors`` =
the embeddings).  ``ctx`` is any stage context that declares those names (select, compare).

The pool itself stays in its part files: :class:`Pool` knows its size (from the Parquet
footers) and hands the part files to the tasks of :mod:`selectllm.select.distributed`; only the
strategies that need every row in one process load it whole (:meth:`Pool.arrays`,
:meth:`Pool.embeddings`), after :func:`selectllm.select.registry.check_scale` has let them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from selectllm.select import distributed as D


class Pool:
    """The pool as a strategy sees it.  ``remote``: run the part tasks on Ray (else in this
    process, one part at a time), with the options the stage's ``Resources.workers`` gives."""

    def __init__(self, ctx, remote: bool | None = None):
        if remote is None:
            import ray

            remote = ray.is_initialized()
        a = ctx.input("assignments")
        self.ctx, self.remote, self.fs = ctx, remote, ctx.run.fs
        self.files = a.files()
        self.n = a.num_rows()
        self.k = ctx.input("centers").num_rows() if ctx.input("centers").exists() else 0
        self.covered = self._covered()
        self._arrays = self._embeddings = None

    def _covered(self) -> np.ndarray | None:
        """Rows per cluster already covered by the programme's earlier selections (the cluster
        stage's ``centers.parquet`` column ``covered``; None when absent or all zero)."""
        c = self.ctx.input("centers")
        if not self.k or "covered" not in c.dataset().schema.names:
            return None
        t = c.read(["cluster_id", "covered"]).sort_by("cluster_id")
        covered = t.column("covered").to_numpy()
        return covered if covered.any() else None

    @property
    def tasks(self) -> dict | None:
        """The Ray options of one part task (None: in this process): asked of the stage's
        declaration when first used, after Ray is up."""
        return task_options(self.ctx) if self.remote else None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids sorted, cluster_id, distance) of every pool row, in this process (O(N))."""
        if self._arrays is None:
            a = self.ctx.input("assignments").read().sort_by("id")
            self._arrays = (np.asarray(a.column("id").to_pylist(), dtype=object), a.column("cluster_id").to_numpy(),
                            a.column("distance").to_numpy())
        return self._arrays

    def embeddings(self) -> np.ndarray:
        """Every vector, row for row with :meth:`arrays` (O(N·d))."""
        if self._embeddings is None:
            ids = self.arrays()[0]
            all_ids, x = load_embeddings(self.ctx.input("vectors"))
            if len(all_ids) != len(ids) or not np.array_equal(all_ids, ids):
                raise RuntimeError("select: the embedded rows and the cluster assignments differ; rerun `selectllm cluster`")
            self._embeddings = x
        return self._embeddings

    def labels_of(self, ids: list[str]) -> dict[str, int]:
        """The cluster of some ids (a small set), read with a filter."""
        t = D.lookup_table(self.fs, self.files, ids, ["cluster_id"], self.tasks)
        return {} if t is None else dict(zip(t.column("id").to_pylist(), t.column("cluster_id").to_pylist()))


def task_options(ctx) -> dict:
    """Ray options of one part task of a stage that runs selection strategies, from its
    ``Resources.workers`` (``select.stage.select_workers``' ``task_cpus``)."""
    return {"num_cpus": ctx.workers()["task_cpus"]}


def lookup_rows(rows, ids: list[str], columns: list[str], tasks: dict | None) -> dict[str, dict]:
    """The dedup rows of some ids (``rows``: the ``rows`` input), read by tasks with a filter
    (``tasks``: their Ray options, None: in this process): the pool never lands on the driver."""
    table = D.lookup_table(rows.run.fs, rows.files(), ids, columns, tasks)
    return {} if table is None else {row["id"]: row for row in table.to_pylist()}


def lookup(ctx, ids: list[str], columns: list[str]) -> dict[str, dict]:
    """:func:`lookup_rows` for a stage, remembering whole rows (but the embedded ``text``, which
    repeats instruction and input): the selection's texts come from the candidates' lookup
    instead of a second scan of the pool."""
    cache = ctx.__dict__.setdefault("row_cache", {})
    missing = [i for i in ids if i not in cache]
    if missing:
        rows = ctx.input("rows")
        names = [c for c in rows.dataset().schema.names if c != "text"]
        cache.update(lookup_rows(rows, missing, names, tasks_of(ctx)))
    return {i: {c: cache[i].get(c) for c in ["id", *columns]} for i in ids if i in cache}


def centers(ctx) -> pa.Table:
    return ctx.input("centers").read().sort_by("cluster_id")


def load_embeddings(vectors) -> tuple[np.ndarray, np.ndarray]:
    """(ids, X): every embedded row sorted by id, X float32 (n, d) L2-normalized."""
    from selectllm.embed.embedder import from_fixed_size_list

    table = vectors.read(columns=["id", "embedding"]).sort_by("id")
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    return ids, from_fixed_size_list(table.column("embedding"))


def tasks_of(ctx) -> dict | None:
    """:func:`task_options` when this process is connected to Ray, else None (in this process)."""
    import ray

    return task_options(ctx) if ray.is_initialized() else None


def vectors_of(ctx, ids: list[str], tasks: dict | None) -> np.ndarray:
    """The embeddings of some ids (a small set, e.g. a selection or a sample), row for row."""
    from selectllm.embed.embedder import from_fixed_size_list

    vec = ctx.input("vectors")
    t = D.lookup_table(vec.run.fs, vec.files(), ids, ["embedding"], tasks)
    if t is None or t.num_rows != len(set(ids)):
        raise RuntimeError("select: some selected rows have no embedding; rerun `selectllm embed`")
    pos = {v: i for i, v in enumerate(t.column("id").to_pylist())}
    x = from_fixed_size_list(t.column("embedding"))
    return x[np.asarray([pos[i] for i in ids], dtype=np.int64)] if len(ids) else x[:0]


def hash_sample(pool: Pool, k: int, seed: int) -> list[str]:
    """The ids of a seeded uniform sample of ``k`` pool rows (all rows when the pool is smaller),
    sorted: :func:`selectllm.select.distributed.smallest_keys` over the assignment parts."""
    t = D.smallest_keys(pool.fs, pool.files, k, seed, pool.tasks)
    return sorted(t.column("id").to_pylist())
