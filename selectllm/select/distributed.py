"""The select work that reads the pool, done by tasks over its part files, never on the driver.

Every function here takes the part files of one declared input (``cluster/assignments.parquet/``
or ``dedup/`` or ``embed/``) and ``tasks``: the Ray options of one task, as the stage's
``Resources.workers`` sized them (``select.stage.select_workers``: ``{"num_cpus": task_cpus}``),
one Ray task per part (or per bucket); ``None``: the same functions run in this process one part
at a time, with the same bounded memory.  The rows of a planning bucket and the files of a lookup
task below bound what one task holds, on Ray or here.  The driver only ever holds what it asked for:

* :func:`plan_groups_distributed` -- the ``selectllm`` groups.  Pass 1: every part counts its
  rows per cluster (bincount).  The driver turns the sizes into quotas (:func:`plan.allocate_quotas`,
  O(k)).  Pass 2, a shuffle by cluster: every part splits its rows into ``buckets`` (cluster mod
  buckets, rows of clusters without a quota dropped), and each bucket task sorts its clusters'
  members by (distance, id) and makes its prompts (:func:`plan.cluster_candidates`: evenly spaced
  ranks, or seeded random draws when a quota needs several prompts).  The driver gets O(groups x candidates) ids: exactly the
  groups :func:`plan.plan_groups` makes with the whole pool in one process.
* :func:`lookup_table` -- rows by id (a small set: candidates, the selection): each task scans
  some files with an ``id in (...)`` filter.
* :func:`closest_to_centers` -- every row's nearest centroid (one pass over the vector parts);
  each part keeps, per centroid, its closest row, and its ``m`` rows closest to their own centroid;
  the driver merges them as parts finish (O(centroids + m)).
* :func:`smallest_keys` / :func:`longest_rows` -- a seeded uniform sample (the ``k`` rows with the
  smallest keyed hash of their id: bottom-k sampling) and the ``k`` longest rows; each part keeps
  its own ``k`` best, the driver merges as parts finish (O(k)).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from selectllm.select.plan import Group, allocate_quotas, cluster_candidates

PLAN_ROWS_PER_TASK = 250_000  # rows of one planning bucket (≈ 300 B/row in a task: ≈ 75 MB)
LOOKUP_FILES_PER_TASK = 8  # part files one lookup task scans
BATCH_ROWS = 65_536  # rows per streamed batch of a part


# ------------------------------------------------------------------------------------ tasks
def run_tasks(fn, args: list[tuple], tasks: dict | None, num_returns: int = 1):
    """``fn(*a)`` for each ``a`` of ``args``: Ray tasks with the options ``tasks`` (results yielded
    as they finish, with their index) or, when ``tasks`` is None, one after the other in this process."""
    if tasks is None:
        for i, a in enumerate(args):
            yield i, fn(*a)
        return
    import ray

    task = ray.remote(fn).options(**tasks, num_returns=num_returns)
    pending = {task.remote(*a): i for i, a in enumerate(args)}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            yield pending.pop(ref), ray.get(ref)


def _batches(fs, path: str, columns: list[str]):
    """A part's batches, decoded in this thread; Arrow's pool is emptied after the part (task
    workers are reused: what the pool kept for reuse would add up over the parts they read)."""
    from selectllm.io import release_arrow_memory

    with fs.open(path, "rb") as f:
        yield from pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False)
    release_arrow_memory()


# ------------------------------------------------------------------------------- group plan
def _part_sizes(fs, path: str, k: int) -> np.ndarray:
    sizes = np.zeros(k, dtype=np.int64)
    for b in _batches(fs, path, ["cluster_id"]):
        sizes += np.bincount(b.column("cluster_id").to_numpy(zero_copy_only=False), minlength=k)[:k]
    return sizes


def cluster_sizes(fs, files: list[str], k: int, tasks: dict | None) -> np.ndarray:
    """Rows per cluster (0..k-1), summed over the parts."""
    total = np.zeros(k, dtype=np.int64)
    for _, sizes in run_tasks(_part_sizes, [(fs, p, k) for p in files], tasks):
        total += sizes
    return total


def _split_part(fs, path: str, quotas: np.ndarray, buckets: int, only: int | None = None):
    """This part's rows of clusters with a quota, one table per bucket (cluster mod buckets);
    ``only``: just that bucket's table."""
    out: list[list[pa.RecordBatch]] = [[] for _ in range(buckets)]
    for b in _batches(fs, path, ["id", "cluster_id", "distance"]):
        labels = b.column("cluster_id").to_numpy(zero_copy_only=False)
        bucket = labels % buckets
        keep = quotas[labels] > 0
        for j in ([only] if only is not None else range(buckets)):
            mask = keep & (bucket == j)
            if mask.any():
                out[j].append(b.filter(pa.array(mask)))
    schema = pa.schema([("id", pa.string()), ("cluster_id", pa.int64()), ("distance", pa.float32())])
    tables = [pa.Table.from_batches(bs).cast(schema) if bs else schema.empty_table() for bs in out]
    if only is not None:
        return tables[only]
    return tables[0] if buckets == 1 else tuple(tables)


def _plan_bucket(quotas: np.ndarray, picks: int, candidates_per_prompt: int, seed: int,
                 *tables: pa.Table) -> list[tuple[int, list[tuple[list[str], int]]]]:
    from selectllm.cluster.sharded import ids_to_keys

    t = pa.concat_tables(tables)
    ids = ids_to_keys(t.column("id"))  # fixed-width bytes (same order as the strings), not objects:
    # a bucket may hold one cluster of most of the pool
    return cluster_candidates(ids, t.column("cluster_id").to_numpy(), t.column("distance").to_numpy(),
                              quotas, picks, candidates_per_prompt, seed)


def plan_groups_distributed(fs, files: list[str], k: int, budget: int, picks: int, candidates_per_prompt: int,
                            tasks: dict | None, buckets: int | None = None, allocation: str = "equal",
                            seed: int = 0, covered: np.ndarray | None = None) -> list[Group]:
    """:func:`plan.plan_groups` over the assignment parts ``files`` (see the module doc);
    ``covered``: rows per cluster the programme's earlier selections already cover (quotas)."""
    sizes = cluster_sizes(fs, files, k, tasks)
    quotas = allocate_quotas(sizes, budget, picks, allocation, covered=covered)
    rows = int(sizes[quotas > 0].sum())
    if rows == 0:
        return []
    if buckets is None:
        buckets = max(1, -(-rows // PLAN_ROWS_PER_TASK))
    buckets = max(1, min(buckets, int((quotas > 0).sum()) or 1))
    found: dict[int, list[tuple[list[str], int]]] = {}
    if tasks is not None:
        import ray

        q = ray.put(quotas)
        splits = [ray.remote(_split_part).options(**tasks, num_returns=buckets).remote(fs, p, q, buckets)
                  for p in files]
        if buckets == 1:
            splits = [[s] for s in splits]
        plans = [(q, picks, candidates_per_prompt, seed, *[s[j] for s in splits]) for j in range(buckets)]
        for _, res in run_tasks(_plan_bucket, plans, tasks):
            found.update(res)
    else:  # one bucket at a time: this process holds one bucket's rows, never the pool
        for j in range(buckets):
            found.update(_plan_bucket(quotas, picks, candidates_per_prompt, seed,
                                      *[_split_part(fs, p, quotas, buckets, only=j) for p in files]))
    groups = []
    for c in np.flatnonzero(quotas > 0):
        for cand, quota in found[int(c)]:
            groups.append(Group(group_id=len(groups), cluster_id=int(c), candidates=cand, quota=quota))
    return groups


# ----------------------------------------------------------------------------------- lookup
def _scan(fs, files: list[str], ids: pa.Array, columns: list[str] | None) -> pa.Table:
    from selectllm.io import release_arrow_memory

    cols = None if columns is None else ["id", *[c for c in columns if c != "id"]]
    table = pds.dataset(files, format="parquet", filesystem=fs).to_table(columns=cols, filter=pc.field("id").isin(ids),
                                                                         use_threads=False)
    release_arrow_memory()  # a filtered scan decodes whole row groups to keep a few rows
    return table


def lookup_table(fs, files: list[str], ids: list[str], columns: list[str] | None,
                 tasks: dict | None) -> pa.Table | None:
    """The rows of ``ids`` (``columns``, or every column) in the files; None when there are no files."""
    if not files:
        return None
    wanted = pa.array(sorted(set(ids)), pa.string())
    if tasks is not None:
        import ray

        wanted = ray.put(wanted)
    step = LOOKUP_FILES_PER_TASK
    tables = dict(run_tasks(_scan, [(fs, files[i:i + step], wanted, columns) for i in range(0, len(files), step)],
                            tasks))
    return pa.concat_tables([tables[i] for i in sorted(tables)], promote_options="default")


# ---------------------------------------------------------------------------- sample, top-k
def hash_keys(ids: list[str], seed: int) -> np.ndarray:
    """A keyed 64-bit hash of each id (BLAKE2b, key = the seed): uniform, independent of order."""
    key = str(int(seed)).encode()
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8, key=key).digest(), "big")
                        for i in ids), dtype=np.uint64, count=len(ids))


def _keep_best(table: pa.Table, k: int, keys: list[tuple[str, str]]) -> pa.Table:
    if table.num_rows <= k:
        return table.sort_by(keys)
    return table.take(pc.sort_indices(table, sort_keys=keys)[:k])


def _part_smallest(fs, path: str, k: int, seed: int, columns: list[str]) -> pa.Table:
    best = None
    for b in _batches(fs, path, columns):
        t = pa.Table.from_batches([b])
        t = t.append_column("key", pa.array(hash_keys(t.column("id").to_pylist(), seed), pa.uint64()))
        best = _keep_best(t if best is None else pa.concat_tables([best, t]), k, [("key", "ascending"), ("id", "ascending")])
    return best


def _merge(results, k: int, keys: list[tuple[str, str]]) -> pa.Table | None:
    best = None
    for _, t in results:
        if t is not None and t.num_rows:
            best = _keep_best(t if best is None else pa.concat_tables([best, t]), k, keys)
    return best


def smallest_keys(fs, files: list[str], k: int, seed: int, tasks: dict | None,
                  columns: list[str] = ("id",)) -> pa.Table:
    """The ``k`` rows with the smallest :func:`hash_keys` (ties: lowest id): a uniform sample
    without replacement, the same whatever the parts.  Columns: ``columns`` + ``key``."""
    keys = [("key", "ascending"), ("id", "ascending")]
    best = _merge(run_tasks(_part_smallest, [(fs, p, k, seed, list(columns)) for p in files], tasks), k, keys)
    return best if best is not None else pa.table({c: pa.array([], pa.string()) for c in columns})


def _part_longest(fs, path: str, k: int) -> pa.Table:
    best = None
    for b in _batches(fs, path, ["id", "instruction", "input"]):
        chars = pc.add(pc.utf8_length(pc.fill_null(b.column("instruction"), "")),
                       pc.utf8_length(pc.fill_null(b.column("input"), "")))
        t = pa.table({"id": b.column("id"), "chars": chars.cast(pa.int64())})
        best = _keep_best(t if best is None else pa.concat_tables([best, t]), k,
                          [("chars", "descending"), ("id", "ascending")])
    return best


def longest_rows(fs, files: list[str], k: int, tasks: dict | None) -> pa.Table:
    """The ``k`` rows with the most characters of instruction + input (ties: lowest id): id, chars."""
    best = _merge(run_tasks(_part_longest, [(fs, p, k) for p in files], tasks), k,
                  [("chars", "descending"), ("id", "ascending")])
    return best if best is not None else pa.table({"id": pa.array([], pa.string()), "chars": pa.array([], pa.int64())})


# ----------------------------------------------------------------------- closest to centers
_BY_LABEL = [("label", "ascending"), ("d2", "ascending"), ("id", "ascending")]
_BY_DISTANCE = [("d2", "ascending"), ("id", "ascending")]


def _first_of_runs(t: pa.Table, column: str) -> pa.Table:
    """The first row of each run of equal values of ``column`` (``t`` sorted on it)."""
    if t.num_rows < 2:
        return t
    col = t.column(column).combine_chunks()
    new = pc.not_equal(col.slice(1), col.slice(0, len(col) - 1))
    return t.filter(pa.concat_arrays([pa.array([True]), new.cast(pa.bool_())]))


def _reduce_closest(t: pa.Table, m: int) -> pa.Table:
    """Of rows ``(id, label, d2)`` (an id may repeat): the first of each label in (d2, id) order,
    and the ``m`` first distinct ids in (d2, id) order (an id may be in both)."""
    heads = _first_of_runs(t.take(pc.sort_indices(t, sort_keys=_BY_LABEL)), "label")
    top = _first_of_runs(t.take(pc.sort_indices(t, sort_keys=_BY_DISTANCE)), "id").slice(0, m)
    return pa.concat_tables([heads, top])


def _part_closest(fs, path: str, centers: np.ndarray, m: int) -> pa.Table:
    from selectllm.cluster.kmeans_groups import nearest_center
    from selectllm.embed.embedder import from_fixed_size_list

    best = None
    for b in _batches(fs, path, ["id", "embedding"]):
        label, d2 = nearest_center(from_fixed_size_list(b.column("embedding")), centers)
        t = pa.table({"id": b.column("id"), "label": pa.array(label, pa.int64()), "d2": pa.array(d2, pa.float32())})
        best = _reduce_closest(t if best is None else pa.concat_tables([best, t]), m)
    return best


def closest_to_centers(fs, files: list[str], centers: np.ndarray, m: int, tasks: dict | None) -> list[str]:
    """The row closest to each centroid (squared distance, ties: lowest id), in centroid order;
    a centroid that is no row's nearest gets none.  Then, while fewer than ``m``, the rows
    closest to their own centroid that are not chosen yet, in (distance, id) order."""
    if tasks is not None:  # one copy in the object store, not one per task
        import ray

        centers = ray.put(centers)
    best = None
    for _, t in run_tasks(_part_closest, [(fs, p, centers, m) for p in files], tasks):
        if t is not None and t.num_rows:
            best = _reduce_closest(t if best is None else pa.concat_tables([best, t]), m)
    if best is None:
        return []
    heads = _first_of_runs(best.take(pc.sort_indices(best, sort_keys=_BY_LABEL)), "label").column("id").to_pylist()
    chosen = set(heads)
    for i in best.take(pc.sort_indices(best, sort_keys=_BY_DISTANCE)).column("id").to_pylist():
        if len(heads) >= m:
            break
        if i not in chosen:
            heads.append(i)
            chosen.add(i)
    return heads[:m]
