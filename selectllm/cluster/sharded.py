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

The first center is the row least aligned with the mean direction
(:func:`selectllm.cluster.kcenter.first_center`; the mean is a reduction of the shards' column sums); ``initial`` ids are looked up in the shards and become the first centers.
Then every shard assigns its rows to the nearest center in blocks (matrix-matrix) and returns
cluster sizes and radii, and each writes its own id-sorted part of ``assignments.parquet/``
(:func:`write_assignments`).
``mode="coreset"`` replaces the rounds by one local greedy per shard and the same distributed
rounds over the union of the local centers, which stays in the shards
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
PROGRESS_SECONDS = 10.0  # at most one progress line this often
MIN_SHARD_ROWS = 50_000  # cluster.shards: auto never makes shards smaller than this
MERGE_ROWS = 1 << 20  # rows per Parquet row group of a shard's assignment part
LOAD_BATCH_ROWS = 16_384  # vectors decoded at once while a shard loads


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


def _load(source, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(ids sorted, rows in the storage dtype, in id order) of a shard's source."""
    kind = source[0]
    if kind == "parquet":
        return _load_parquet(source[1], source[2], dtype)
    if kind == "arrays":
        _, ids, x = source
        ids = np.asarray(ids, dtype="S") if np.asarray(ids).dtype.kind != "S" else np.asarray(ids)
    elif kind == "synthetic":
        ids, x = synthetic_rows(**source[1])
    else:
        raise ValueError(f"unknown shard source {kind!r}")
    if len(ids) > 1 and not (ids[1:] >= ids[:-1]).all():
        order = np.argsort(ids, kind="stable")
        ids, x = ids[order], x[order]
    return ids, (encode(x, dtype) if len(ids) else np.zeros((0, x.shape[1] if x.ndim == 2 else 0), np.float32))


def _read_piece(fs, piece, column: str, batch_rows: int | None = None):
    """The piece's values of ``column``, a batch of at most ``batch_rows`` at a time (a row group
    is never decoded whole)."""
    path, rg, start, stop = piece
    pos = 0
    with fs.open(path, "rb") as f:
        batches = pq.ParquetFile(f).iter_batches(batch_size=batch_rows or LOAD_BATCH_ROWS, row_groups=[rg],
                                                 columns=[column], use_threads=False)
        for b in batches:
            lo, hi = max(start - pos, 0), min(stop - pos, b.num_rows)
            pos += b.num_rows
            if lo < hi:
                yield b.column(0).slice(lo, hi - lo)
            if pos >= stop:
                break


def _load_parquet(fs, pieces, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Stream the shard's row groups into one preallocated array, already in id order and in the
    storage dtype (float16 / bfloat16 take half the bytes): the ids are read first (a small
    column), their sort order gives every row its place, then the vectors are read in batches,
    converted and written to their rows.  Peak = the final arrays + one batch (Arrow's pool
    is emptied after each piece, so the memory it kept for reuse does not add up)."""
    from selectllm.embed.embedder import from_fixed_size_list
    from selectllm.io import release_arrow_memory

    if not pieces:
        return np.zeros(0, dtype="S1"), np.zeros((0, 0), np.float32)
    keys = np.concatenate([ids_to_keys(a) for p in pieces for a in _read_piece(fs, p, "id")])
    order = np.argsort(keys, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    keys = keys[order]
    del order
    release_arrow_memory()
    x = None
    at = 0
    for p in pieces:
        for a in _read_piece(fs, p, "embedding"):
            block = encode(from_fixed_size_list(a), dtype)
            if x is None:
                x = np.empty((len(keys), block.shape[1]), dtype=block.dtype)
            x[rank[at:at + len(block)]] = block
            at += len(block)
        release_arrow_memory()
    return keys, x


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
        self.keys, x = _load(source, dtype)
        self.n = len(self.keys)
        self.d = x.shape[1] if x.ndim == 2 and x.shape[1] else 0
        self.dtype, self.device = dtype, device
        self.kernel = make_kernel(x, device=device, dtype=dtype) if self.n else None
        self.load_seconds = time.perf_counter() - t0
        self.labels = self.dist = None
        self._full = None  # (keys, kernel) while a coreset subset is active

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

    def least_dot(self, mean: np.ndarray):
        """(value, key, local, vector) of this shard's row least aligned with the mean direction."""
        if not self.n:
            return None
        sims = self.kernel.dots(mean)
        i = int(np.argmin(sims))  # first minimum: lowest id of this shard
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
        if not entries:  # no global seed: start from this shard's edge row (as kcenter.first_center)
            mean = (kern.col_sums() / self.n).astype(np.float32)
            i = int(np.argmin(kern.dots(mean)))
            entries = [Entry(0, i, self.keys[i], kern.rows([i])[0])]
        own_seeds = sum(1 for e in entries if e.shard == 0)
        want = min(len(entries) + tau, self.n + len(entries) - own_seeds)
        chosen = greedy(local_step(kern, self.keys), want, entries, batch=batch, margin=margin,
                        exact=self.device == "cpu", final_update=False)
        extra = [e for e in chosen[len(entries):]]
        loc = np.asarray([e.local for e in extra], dtype=np.int64)
        return self.keys[loc], loc, (kern.rows(loc) if len(loc) else np.zeros((0, self.d), np.float32))

    def coreset_subset(self, tau: int, seeds: list[tuple[np.ndarray, int]], batch: int, margin: float) -> dict:
        """Coreset mode: the local greedy, then this shard becomes its own seeds and local centers
        (:meth:`enter_subset`).  Returns {full row of each own seed: its row in the subset}."""
        _, loc, _ = self.local_greedy(tau, seeds, batch, margin)
        own = [int(o) for _, o in seeds if o >= 0]
        self.enter_subset(np.concatenate([loc, np.asarray(own, dtype=np.int64)]))
        return {o: int(np.searchsorted(self.sub_local, o)) for o in own}

    def enter_subset(self, local: np.ndarray) -> int:
        """Coreset mode: from now on this shard is only its rows ``local`` (in id order) until
        :meth:`leave_subset`; the distributed rounds then run over the union of every shard's
        local centers without gathering it anywhere."""
        if self._full is None:
            self._full = (self.keys, self.kernel, self.n)
        keys, kernel, _ = self._full
        loc = np.unique(np.asarray(local, dtype=np.int64))
        self.sub_local = loc
        self.keys = keys[loc]
        self.n = len(loc)
        rows = kernel.rows(loc) if len(loc) else np.zeros((0, self.d), np.float32)
        self.kernel = make_kernel(encode(rows, self.dtype), device=self.device, dtype=self.dtype) if self.n else None
        return self.n

    def leave_subset(self, positions: list[int] | None = None) -> list[int]:
        """Back to all rows; returns the full rows of subset rows ``positions``."""
        full = [int(self.sub_local[p]) for p in positions or []]
        if self._full is not None:
            self.keys, self.kernel, self.n = self._full
            self._full = None
            if self.kernel is not None:
                self.kernel.reset()
        return full

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

    def prior_radius(self, prior: np.ndarray) -> float:
        """After :meth:`assign`: keeps every row's distance to its nearest ``prior`` vector and
        returns this shard's covering radius counting the prior vectors as centers (the largest
        distance of a row to its nearest center or prior vector)."""
        self.prior_dist = None
        if not self.n or self.labels is None or not len(prior):
            return 0.0
        _, best = self.kernel.assign(np.asarray(prior, dtype=np.float32))  # blockwise, as the assignment
        self.prior_dist = np.maximum(np.subtract(1.0, best, dtype=np.float32), 0.0)
        return float(np.minimum(self.prior_dist, self.dist).max())

    def covered(self, radius: float, k: int) -> np.ndarray:
        """Rows per cluster within ``radius`` of a prior vector (after :meth:`prior_radius`)."""
        if getattr(self, "prior_dist", None) is None:
            return np.zeros(k, np.int64)
        return np.bincount(self.labels[self.prior_dist <= radius], minlength=k).astype(np.int64)

    def write_part(self, fs, path: str, rows: int = MERGE_ROWS) -> int:
        """Write this shard's assignment rows (id-sorted) to its own part file; returns rows."""
        from selectllm.schemas import ASSIGNMENTS

        with fs.open(path, "wb") as f, pq.ParquetWriter(f, ASSIGNMENTS) as writer:
            if self.labels is None or not self.n:
                writer.write_table(ASSIGNMENTS.empty_table())
                return 0
            for a in range(0, self.n, rows):
                b = min(self.n, a + rows)
                writer.write_table(pa.table({"id": keys_to_arrow(self.keys[a:b]), "cluster_id": self.labels[a:b],
                                             "distance": self.dist[a:b], "is_center": self.is_center[a:b]},
                                            schema=ASSIGNMENTS))
        return self.n


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
    """The first centers: the ``initial`` ids in order, else the row least aligned with the mean
    direction (:func:`selectllm.cluster.kcenter.first_center`)."""
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
    for s, r in enumerate(group.call("least_dot", mean)):
        if r is not None and (best is None or r[0] < best[0][0] or (r[0] == best[0][0] and r[1] < best[0][1])):
            best = (r, s)
    (val, key, local, vec), s = best
    return [Entry(s, local, key, vec)]


class GroupStep:
    """The :data:`~selectllm.cluster.kcenter.Step` of the rounds over a :class:`ShardGroup`: one
    remote call per shard and round.  ``log`` (a print function) gets "cluster: round r, c/k
    centers" every :data:`PROGRESS_SECONDS`."""

    def __init__(self, group: ShardGroup, k: int, log=None, what: str = "centers"):
        self.group, self.k, self.log, self.what = group, k, log, what
        self.overhead = [0.0, 0.0]  # round trip beyond the slowest shard; all step calls
        self.rounds = self.centers = 0
        self.last = time.perf_counter()

    @staticmethod
    def m(batch: int, sizes: list[int]) -> int:
        live = sum(1 for n in sizes if n)
        return max(16, -(-2 * (2 * batch + 2) // max(1, live)))

    def __call__(self, pending: list[Entry], m_: int):
        group = self.group
        vecs = np.stack([e.vec for e in pending]).astype(np.float32) if pending else None
        if vecs is not None and vecs.nbytes * len(group) > (256 << 10):
            vecs = group.share(vecs)
        own = [[e.local for e in pending if e.shard == s] for s in range(len(group))]
        w0 = time.perf_counter()
        reports = group.call("step", each=[(vecs, own[s], m_) for s in range(len(group))])
        wall = time.perf_counter() - w0
        self.overhead[0] += wall - max((r.seconds for r in reports if r is not None), default=0.0)
        self.overhead[1] += wall
        self.rounds += 1
        self.centers += len(pending)
        if self.log is not None and time.perf_counter() - self.last >= PROGRESS_SECONDS:
            self.last = time.perf_counter()
            self.log(f"cluster: round {self.rounds:,}, {self.centers:,}/{self.k:,} {self.what} chosen")
        return reports


PRIOR_CHUNK = 1024  # prior center vectors applied per pass (a shard's product block stays small)


def apply_prior(group: ShardGroup, prior: np.ndarray | None) -> None:
    """Every shard's distances start from the ``prior`` center vectors (not rows of the pool)."""
    if prior is None:
        return
    for s in range(0, len(prior), PRIOR_CHUNK):
        group.call("step", group.share(np.ascontiguousarray(prior[s:s + PRIOR_CHUNK], dtype=np.float32)), [], 0)


def run_kcenter(group: ShardGroup, k: int, initial: list | None = None, mode: str = "exact",
                batch: int = DEFAULT_BATCH, coreset_factor: float = 2.0, log=None,
                prior: np.ndarray | None = None) -> KCenterResult:
    """Centers (farthest-first, exact or coreset), then every row assigned to its nearest.
    ``log``: a print function for progress lines (rounds).  ``prior``: center vectors that are
    not rows of the pool (earlier selections of the programme): the k centers are the rows
    farthest from them and from each other; they take no cluster of their own."""
    t_start = time.perf_counter()
    infos = group.call("info")
    n = sum(i["n"] for i in infos)
    d = max(i["d"] for i in infos)
    k = min(k, n)
    exact = all(i["device"] == "cpu" for i in infos)
    margin = margin_for(d)
    stats: dict[str, Any] = {"shards": len(group), "mode": mode, "nodes": len({i["node"] for i in infos}),
                             "rows_per_shard": [i["n"] for i in infos]}
    prior = prior if prior is not None and len(prior) else None
    seeds = seed_entries(group, initial)[:k] if initial or prior is None else []
    t0 = time.perf_counter()
    if mode == "coreset":

        chosen = coreset_centers(group, k, seeds, tau=max(1, int(round(coreset_factor * k))), batch=batch,
                                 margin=margin, stats=stats, exact=exact, log=log, prior=prior)
    else:
        apply_prior(group, prior)
        step = GroupStep(group, k, log)
        chosen = greedy(step, k, seeds, batch=batch, m=step.m(batch, [i["n"] for i in infos]), margin=margin,
                        exact=exact, final_update=False, stats=stats)
        overhead = step.overhead
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


def covered_counts(group: ShardGroup, prior: np.ndarray | None, k: int) -> tuple[np.ndarray, float]:
    """(per cluster, its rows within r of a ``prior`` vector (an earlier selection); r), where r
    is the run's covering radius with the prior vectors counted as centers: the largest distance
    of a row to its nearest center or earlier selection.  After :func:`run_kcenter`'s assignment;
    zeros (and 0) without prior vectors."""
    if prior is None or not len(prior):
        return np.zeros(k, np.int64), 0.0
    ref = group.share(np.ascontiguousarray(prior, dtype=np.float32))
    radius = max(group.call("prior_radius", ref))
    return np.sum(group.call("covered", float(radius), k), axis=0).astype(np.int64), float(radius)


def write_assignments(group: ShardGroup, fs, folder: str, rows: int = MERGE_ROWS) -> int:
    """Every shard writes its own rows to ``folder/part-<shard>.parquet`` (each part id-sorted;
    the folder reads as one table, as ``dedup/duplicates.parquet`` does).  Nothing passes
    through the driver.  Returns the rows written."""
    import posixpath

    fs.makedirs(folder, exist_ok=True)
    return sum(group.call("write_part", each=[(fs, posixpath.join(folder, f"part-{s:05d}.parquet"), rows)
                                              for s in range(len(group))]))


# ----------------------------------------------------------------------------- coreset mode
# Coreset k-center for very large k or very many shards (composable coresets).
#
# Each shard runs farthest-first on its own rows, after the global first centers, for
# ``tau = c·k`` local centers (no communication); then farthest-first runs over the union of the
# local centers (and the seeds), distributed over the shards that hold them.  The local centers cover their shard within the
# local radius, which is at most twice the optimal k-center radius of the whole pool, so the
# result is a constant-factor approximation (4 with tau = k; Malkomes et al., NeurIPS 2015;
# Ceccarello, Pietracaprina & Pucci, VLDB 2019, who show that larger tau brings it close to the
# sequential 2-approximation).  It trades exactness for one round instead of ~k/batch rounds;
# ``benchmarks/bench_kcenter.py`` compares its radius with the exact one.
def coreset_centers(group, k: int, seeds: list[Entry], tau: int, batch: int, margin: float,
                    stats: dict | None = None, exact: bool = True, log=None,
                    prior: np.ndarray | None = None) -> list[Entry]:
    """k centers: the seeds, then farthest-first over the union of every shard's tau local centers.

    The union never leaves the shards: each shard shrinks to its local centers (and its own
    seeds), the same distributed rounds as the exact mode run over these subsets (ties to the
    lowest id, as farthest-first over the id-ordered union would), and the chosen rows are mapped
    back to the shards' full rows.  The driver holds only the k chosen vectors.
    """
    from selectllm.cluster.kcenter import greedy

    each = []
    before = [(np.asarray(v, dtype=np.float32), -1) for v in (prior if prior is not None else [])]
    for s in range(len(group)):
        each.append((tau, before + [(np.asarray(e.vec, dtype=np.float32), e.local if e.shard == s else -1)
                                    for e in seeds], batch, margin))
    positions = group.call("coreset_subset", each=each)
    apply_prior(group, prior)  # the subsets' distances start from the prior centers too
    sizes = [i["n"] for i in group.call("info")]
    sub_seeds = [Entry(e.shard, positions[e.shard][e.local], e.key, e.vec) for e in seeds]
    step = GroupStep(group, k, log, what="centers (coreset)")
    chosen: list[Entry] = []
    try:
        chosen = greedy(step, k, sub_seeds, batch=batch, m=GroupStep.m(batch, sizes), margin=margin,
                        exact=exact, final_update=False, stats=stats)
    finally:  # the shards get all their rows back, whatever happened
        full = group.call("leave_subset", each=[([e.local for e in chosen if e.shard == s],)
                                                for s in range(len(group))])
    nxt = [iter(f) for f in full]
    out = [Entry(e.shard, next(nxt[e.shard]), e.key, e.vec) for e in chosen]
    if stats is not None:
        stats.update(coreset_size=sum(sizes), coreset_tau=tau)
    return out
