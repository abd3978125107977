"""Distributed k-center: shards of the pool held by Ray actors, rounds run by a coordinator.

Each :class:`Shard` reads its own slice of ``embed/part-*.parquet`` (row groups planned by
:func:`plan_pieces`; nothing goes through the driver), sorts it by id and keeps the vectors
(float32, float16 or bfloat16) and a min-distance array in a kernel (numpy/BLAS on CPU, torch on a
GPU).  The coordinator (:func:`run_kcenter`, on the driver) runs the farthest-first rounds of
:func:`selectllm.cluster.kcenter.greedy`: one remote call per shard and round applies the
centers chosen since the last call (one fused pass) and answers with the shard's farthest rows,
their vectors and a bound, so a round is one round trip and several exact rounds are usually
served by one pass.  Ties go to the lowest id across all shards (global order = id order), so the
centers do not depend on how the rows are split (``cluster.shards`` is not part of the settings).

The first center is the row closest to the mean direction (the mean is a reduction of the
shards' column sums); ``initial`` ids are looked up in the shards and become the first centers.
Then every shard assigns its rows to the nearest center in blocks (matrix-matrix) and returns
cluster sizes and radii; :func:`write_assignments` merges the shards' id-sorted rows range by
range into one id-sorted ``assignments.parquet`` without holding the whole table.
``mode="coreset"`` replaces the rounds by one local greedy per shard and a greedy over the union
(:mod:`selectllm.cluster.coreset`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.cluster.kcenter import (
    Candidates,
    Entry,
    encode,
    greedy,
    local_step,
    make_kernel,
    margin_for,
)

DEFAULT_BATCH = 64  # exact rounds one pass may serve at most
MIN_SHARD_ROWS = 50_000  # cluster.shards: auto never makes shards smaller than this
MERGE_ROWS = 1 << 20  # rows per id range when the shards' assignments are merged


# ------------------------------------------------------------------------------------ sources
def ids_to_keys(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An Arrow string column as a numpy bytes array (sorts like Arrow and Python strings)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.zeros(0, dtype="S1")
    b = col.cast(pa.binary())
    offsets = np.frombuffer(b.buffers()[1], dtype=np.int32)[b.offset:b.offset + len(b) + 1]
    lengths = np.diff(offsets)
    width = int(lengths[0])
    if b.null_count == 0 and width > 0 and (lengths == width).all():
        data = np.frombuffer(b.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        return data.view(f"S{width}").copy()
    return np.array([v.encode() for v in col.to_pylist()], dtype="S")


def keys_to_arrow(keys: np.ndarray) -> pa.Array:
    return pa.array(keys.tolist(), pa.binary()).cast(pa.string())


def synthetic_rows(n: int, d: int, seed: int, start: int, stop: int, chunk: int = 65536):
    """Rows [start, stop) of a deterministic synthetic pool of normalized Gaussian vectors.

    Ids are the zero-padded row numbers (so id order = row order).  The same rows come out
    whatever the slicing, so a single process and any set of shards see the same pool.
    """
    parts = []
    for j in range(start // chunk, (stop - 1) // chunk + 1 if stop > start else start // chunk):
        rows = np.random.default_rng([seed, j]).standard_normal((min(chunk, n - j * chunk), d), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        lo, hi = max(start, j * chunk) - j * chunk, min(stop, (j + 1) * chunk) - j * chunk
        parts.append(rows[lo:hi])
    x = np.concatenate(parts) if parts else np.zeros((0, d), np.float32)
    ids = np.char.zfill(np.arange(start, stop).astype("S12"), 12)
    return ids, x


def _load(source) -> tuple[np.ndarray, np.ndarray]:
    kind = source[0]
    if kind == "arrays":
        _, ids, x = source
        return np.asarray(ids, dtype="S") if np.asarray(ids).dtype.kind != "S" else np.asarray(ids), x
    if kind == "synthetic":
        return synthetic_rows(**source[1])
    if kind == "parquet":
        from selectllm.embed.embedder import from_fixed_size_list

        _, fs, pieces = source
        tables = []
        for path, rg, start, stop in pieces:
            with fs.open(path, "rb") as f:
                t = pq.ParquetFile(f).read_row_group(rg, columns=["id", "embedding"])
            tables.append(t.slice(start, stop - start))
        if not tables:
            return np.zeros(0, dtype="S1"), np.zeros((0, 0), np.float32)
        t = pa.concat_tables(tables)
        return ids_to_keys(t.column("id")), from_fixed_size_list(t.column("embedding"))
    raise ValueError(f"unknown shard source {kind!r}")


def plan_pieces(fs, files: list[str], shards: int) -> list[list[tuple[str, int, int, int]]]:
    """Split the row groups of ``files`` into ``shards`` contiguous runs of (almost) equal rows.

    A piece is (path, row group, first row, end row) inside that row group; only footers are read.
    """
    groups = []
    for path in files:
        with fs.open(path, "rb") as f:
            meta = pq.read_metadata(f)
        groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    total = sum(g[2] for g in groups)
    cuts = [round(total * s / shards) for s in range(shards + 1)]
    plan: list[list[tuple[str, int, int, int]]] = [[] for _ in range(shards)]
    base = 0
    for path, g, rows in groups:
        for s in range(shards):
            lo, hi = max(cuts[s], base), min(cuts[s + 1], base + rows)
            if lo < hi:
                plan[s].append((path, g, lo - base, hi - base))
        base += rows
    return plan


# -------------------------------------------------------------------------------------- shard
class Shard:
    """One slice of the pool, sorted by id, with its kernel: the state of one actor."""

    def __init__(self, source, dtype: str = "float32", device: str = "cpu", threads: int | None = None):
        if threads:
            from threadpoolctl import threadpool_limits

            threadpool_limits(threads)  # BLAS threads = the actor's CPUs
        t0 = time.perf_counter()
        ids, x = _load(source)
        if len(ids) > 1 and not (ids[1:] >= ids[:-1]).all():
            order = np.argsort(ids, kind="stable")
            ids, x = ids[order], x[order]
        self.keys = ids
        self.n = len(self.keys)
        self.d = x.shape[1] if x.ndim == 2 and x.shape[1] else 0
        x = encode(x, dtype) if self.n else np.zeros((0, self.d), np.float32)
        self.dtype, self.device = dtype, device
        self.kernel = make_kernel(x, device=device, dtype=dtype) if self.n else None
        self.load_seconds = time.perf_counter() - t0
        self.labels = self.dist = None

    # -- small questions
    def info(self) -> dict:
        import resource

        try:
            import ray

            node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        except Exception:  # pragma: no cover
            node = None
        return {"n": self.n, "d": self.d, "node": node, "pid": os.getpid(), "device": self.device,
                "dtype": self.dtype, "kernel_bytes": self.kernel.nbytes if self.kernel else 0,
                "id_bytes": int(self.keys.nbytes), "load_seconds": self.load_seconds,
                "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}

    def ping(self) -> int:
        return 0

    def col_sums(self) -> np.ndarray:
        return self.kernel.col_sums() if self.n else np.zeros(self.d)

    def best_dot(self, mean: np.ndarray):
        """(value, key, local, vector) of this shard's row closest to the mean direction."""
        if not self.n:
            return None
        sims = self.kernel.dots(mean)
        i = int(np.argmax(sims))  # first maximum: lowest id of this shard
        return float(sims[i]), self.keys[i], i, self.kernel.rows([i])[0]

    def lookup(self, wanted: np.ndarray) -> list[tuple[Any, int, np.ndarray]]:
        """(key, local, vector) of the wanted ids that this shard holds."""
        if not self.n or len(wanted) == 0:
            return []
        wanted = np.asarray(wanted, dtype="S")
        pos = np.searchsorted(self.keys, wanted)
        ok = (pos < self.n) & (self.keys[np.minimum(pos, self.n - 1)] == wanted)
        hits = pos[ok]
        vecs = self.kernel.rows(hits) if len(hits) else []
        return [(self.keys[p], int(p), vecs[j]) for j, p in enumerate(hits)]

    # -- the rounds
    def step(self, vecs: np.ndarray | None, own: list[int], m: int) -> Candidates | None:
        """Apply the new centers (fused pass), mark the ones this shard holds, report the farthest."""
        t0 = time.perf_counter()
        if not self.n:
            return None
        if vecs is not None and len(vecs):
            self.kernel.update(np.asarray(vecs, dtype=np.float32))
        if own:
            self.kernel.mark_centers(own)
        if m == 0:
            return None
        idx, vals, bound = self.kernel.top(m)
        keys = self.keys[idx]
        return Candidates(vals, keys, idx, self.kernel.rows(idx),
                          None if bound is None else (vals[-1], keys[-1]), time.perf_counter() - t0)

    def local_greedy(self, tau: int, seeds: list[tuple[np.ndarray, int]], batch: int, margin: float):
        """Coreset mode: farthest-first on this shard alone, after the global seeds (vector, own row
        or -1).  Returns (keys, locals, vectors) of up to ``tau`` local centers beyond the seeds."""
        if not self.n:
            return self.keys[:0], np.zeros(0, np.int64), np.zeros((0, self.d), np.float32)
        kern = self.kernel
        kern.reset()
        entries = [Entry(0 if own >= 0 else 1, int(own), self.keys[own] if own >= 0 else b"", np.asarray(v))
                   for v, own in seeds]
        if not entries:  # no global seed: start from this shard's central row
            mean = (kern.col_sums() / self.n).astype(np.float32)
            i = int(np.argmax(kern.dots(mean)))
            entries = [Entry(0, i, self.keys[i], kern.rows([i])[0])]
        own_seeds = sum(1 for e in entries if e.shard == 0)
        want = min(len(entries) + tau, self.n + len(entries) - own_seeds)
        chosen = greedy(local_step(kern, self.keys), want, entries, batch=batch, margin=margin,
                        exact=self.device == "cpu", final_update=False)
        extra = [e for e in chosen[len(entries):]]
        loc = np.asarray([e.local for e in extra], dtype=np.int64)
        return self.keys[loc], loc, (kern.rows(loc) if len(loc) else np.zeros((0, self.d), np.float32))

    # -- assignment and output
    def assign(self, centers: np.ndarray, own: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Nearest center for every row (blockwise products); returns (sizes, radii) per cluster."""
        k = len(centers)
        if not self.n:
            return np.zeros(k, np.int64), np.zeros(k, np.float32)
        labels, best = self.kernel.assign(np.asarray(centers, dtype=np.float32))
        dist = np.maximum(np.subtract(1.0, best, dtype=np.float32), 0.0)
        is_center = np.zeros(self.n, dtype=bool)
        for local, cluster in own:  # a center belongs to its own cluster even on ties
            labels[local], dist[local], is_center[local] = cluster, 0.0, True
        self.labels, self.dist, self.is_center = labels, dist, is_center
        sizes = np.bincount(labels, minlength=k).astype(np.int64)
        radii = np.zeros(k, dtype=np.float32)
        np.maximum.at(radii, labels, dist)
        return sizes, radii

    def key_sample(self, count: int) -> np.ndarray:
        if not self.n or count <= 0:
            return self.keys[:0]
        return self.keys[np.linspace(0, self.n - 1, min(count, self.n)).astype(np.int64)]

    def rows_between(self, lo: bytes | None, hi: bytes | None) -> pa.Table:
        """This shard's assignment rows with lo <= id < hi (None: open end), id-sorted."""
        a = 0 if lo is None else int(np.searchsorted(self.keys, lo, side="left"))
        b = self.n if hi is None else int(np.searchsorted(self.keys, hi, side="left"))
        from selectllm.schemas import ASSIGNMENTS

        if self.labels is None or b <= a:
            return ASSIGNMENTS.empty_table()
        return pa.table({"id": keys_to_arrow(self.keys[a:b]), "cluster_id": self.labels[a:b],
                         "distance": self.dist[a:b], "is_center": self.is_center[a:b]}, schema=ASSIGNMENTS)


# ------------------------------------------------------------------------------------- group
class ShardGroup:
    """The shards, as Ray actors or in-process objects, each method called on all at once."""

    def __init__(self, shards: list, remote: bool):
        self.shards = shards
        self.remote = remote

    def __len__(self) -> int:
        return len(self.shards)

    def call(self, method: str, *args, each: list[tuple] | None = None) -> list:
        if self.remote:
            import ray

            refs = [getattr(h, method).remote(*(each[i] if each is not None else args))
                    for i, h in enumerate(self.shards)]
            return ray.get(refs)
        return [getattr(h, method)(*(each[i] if each is not None else args)) for i, h in enumerate(self.shards)]

    def share(self, obj):
        """One copy in the object store for all actors (large arguments), else the object."""
        if self.remote:
            import ray

            return ray.put(obj)
        return obj

    def close(self) -> None:
        if self.remote:
            import ray

            for h in self.shards:
                ray.kill(h)
        self.shards = []

    @classmethod
    def start(cls, sources: list, dtype: str = "float32", device: str = "cpu", remote: bool = True,
              num_cpus: float = 1, num_gpus: float = 0, spread: bool = True) -> "ShardGroup":
        if not remote:
            return cls([Shard(src, dtype=dtype, device=device) for src in sources], remote=False)
        import ray

        opts: dict = {"num_cpus": num_cpus, "num_gpus": num_gpus}
        if spread:
            opts["scheduling_strategy"] = "SPREAD"
        actor = ray.remote(Shard).options(**opts)
        threads = max(1, int(num_cpus))
        handles = [actor.remote(src, dtype, device, threads) for src in sources]
        group = cls(handles, remote=True)
        group.call("ping")  # surfaces load errors here
        return group


# ------------------------------------------------------------------------------- coordinator
@dataclass
class KCenterResult:
    keys: np.ndarray  # center ids in the order chosen
    sizes: np.ndarray
    radii: np.ndarray
    n: int
    stats: dict = field(default_factory=dict)


class MissingIds(KeyError):
    def __init__(self, missing: list):
        super().__init__(missing[0] if missing else "")
        self.missing = missing


def seed_entries(group: ShardGroup, initial: list | None) -> list[Entry]:
    """The first centers: the ``initial`` ids in order, else the row closest to the mean direction."""
    if initial:
        wanted = list(dict.fromkeys(v.encode() if isinstance(v, str) else bytes(v) for v in initial))
        found: dict[bytes, Entry] = {}
        for s, hits in enumerate(group.call("lookup", np.asarray(wanted, dtype="S"))):
            for key, local, vec in hits:
                found[bytes(key)] = Entry(s, local, key, vec)
        missing = [w.decode() for w in wanted if w not in found]
        if missing:
            raise MissingIds(missing)
        return [found[w] for w in wanted]
    infos = group.call("info")
    n = sum(i["n"] for i in infos)
    total = np.sum(group.call("col_sums"), axis=0)
    mean = (total / n).astype(np.float32)
    best = None
    for s, r in enumerate(group.call("best_dot", mean)):
        if r is not None and (best is None or r[0] > best[0][0] or (r[0] == best[0][0] and r[1] < best[0][1])):
            best = (r, s)
    (val, key, local, vec), s = best
    return [Entry(s, local, key, vec)]


def run_kcenter(group: ShardGroup, k: int, initial: list | None = None, mode: str = "exact",
                batch: int = DEFAULT_BATCH, coreset_factor: float = 2.0) -> KCenterResult:
    """Centers (farthest-first, exact or coreset), then every row assigned to its nearest."""
    t_start = time.perf_counter()
    infos = group.call("info")
    n = sum(i["n"] for i in infos)
    d = max(i["d"] for i in infos)
    k = min(k, n)
    exact = all(i["device"] == "cpu" for i in infos)
    margin = margin_for(d)
    stats: dict[str, Any] = {"shards": len(group), "mode": mode, "nodes": len({i["node"] for i in infos}),
                             "rows_per_shard": [i["n"] for i in infos]}
    seeds = seed_entries(group, initial)[:k]
    t0 = time.perf_counter()
    if mode == "coreset":
        from selectllm.cluster.coreset import coreset_centers

        chosen = coreset_centers(group, k, seeds, tau=max(1, int(round(coreset_factor * k))), batch=batch,
                                 margin=margin, stats=stats)
    else:
        live = sum(1 for i in infos if i["n"])
        m = max(16, -(-2 * (2 * batch + 2) // max(1, live)))
        overhead = [0.0, 0.0]  # round trip beyond the slowest shard; all step calls

        def step(pending: list[Entry], m_: int):
            vecs = np.stack([e.vec for e in pending]).astype(np.float32) if pending else None
            if vecs is not None and vecs.nbytes * len(group) > (256 << 10):
                vecs = group.share(vecs)
            own = [[e.local for e in pending if e.shard == s] for s in range(len(group))]
            w0 = time.perf_counter()
            reports = group.call("step", each=[(vecs, own[s], m_) for s in range(len(group))])
            wall = time.perf_counter() - w0
            overhead[0] += wall - max((r.seconds for r in reports if r is not None), default=0.0)
            overhead[1] += wall
            return reports

        chosen = greedy(step, k, seeds, batch=batch, m=m, margin=margin, exact=exact, final_update=False,
                        stats=stats)
        stats["round_overhead_seconds"] = overhead[0]
    stats["select_seconds"] = time.perf_counter() - t0
    if mode != "coreset":
        stats["coordinator_seconds"] = stats["select_seconds"] - overhead[1]
    t0 = time.perf_counter()
    centers = np.stack([np.asarray(e.vec, dtype=np.float32) for e in chosen])
    own = [[(e.local, j) for j, e in enumerate(chosen) if e.shard == s] for s in range(len(group))]
    ref = group.share(centers)
    res = group.call("assign", each=[(ref, own[s]) for s in range(len(group))])
    sizes = np.sum([r[0] for r in res], axis=0)
    radii = np.max([r[1] for r in res], axis=0)
    stats["assign_seconds"] = time.perf_counter() - t0
    stats["seconds"] = time.perf_counter() - t_start
    stats["max_kernel_bytes_per_shard"] = max(i["kernel_bytes"] for i in infos)
    keys = np.asarray([bytes(e.key) for e in chosen], dtype="S")
    return KCenterResult(keys=keys, sizes=sizes, radii=radii, n=n, stats=stats)


def write_assignments(group: ShardGroup, fs, path: str, n: int, merge_rows: int = MERGE_ROWS) -> None:
    """One id-sorted Parquet file from the shards' id-sorted rows, one id range at a time."""
    from selectllm.schemas import ASSIGNMENTS

    ranges = max(1, -(-n // merge_rows))
    splitters: list = []
    if ranges > 1:
        sample = np.sort(np.concatenate(group.call("key_sample", 64 * ranges)))
        splitters = sorted(set(sample[np.linspace(0, len(sample) - 1, ranges + 1).astype(np.int64)[1:-1]].tolist()))
    edges = [None] + splitters + [None]
    with fs.open(path, "wb") as f, pq.ParquetWriter(f, ASSIGNMENTS) as writer:
        for lo, hi in zip(edges[:-1], edges[1:]):
            parts = [t for t in group.call("rows_between", lo, hi) if t.num_rows]
            if parts:
                writer.write_table(pa.concat_tables(parts).sort_by("id"))
