"""Greedy k-center (farthest-first traversal) and nearest-center assignment: the kernels.

Vectors are L2-normalized, so cosine distance is ``1 - x·c``.  Farthest-first is a
2-approximation of the optimal k-center radius (Gonzalez 1985).  Ties go to the lowest row index
(the lowest id: rows are sorted by id), so the result is a pure function of the input.

**Exact batched rounds.**  The plain loop reads all of X once per center, so it runs at memory
bandwidth (:func:`farthest_first_sequential`).  :func:`farthest_first` gives the same centers
with fewer passes: after each pass every shard of rows reports its ``m`` farthest rows (values,
keys, vectors) and a *bound* (no unreported row ranks before its last reported one), and
:func:`pick_batch` chooses several next centers at once, each provably the one the sequential
loop would choose next: after each pick the reported rows' distances are updated with the
kernel's own arithmetic (bit-identical to the shards'), and the batch stops when the next best
reported row no longer beats every shard's bound.  (On hardware whose arithmetic the
coordinator cannot replay, a GPU, each row keeps an interval widened by the float32 error bound
instead, and a pick must beat every interval.)  The rows are then updated with the whole batch
in one fused matrix-matrix pass (``min(min_dist, 1 - max_j x·c_j)`` in blocks: never an n×k or
n×n matrix), so one pass serves ~40 rounds (measured in ``benchmarks/bench_kcenter.py``).

**Reproducible arithmetic.**  Every similarity is computed by the same BLAS call shape: blocks
of exactly ``BLOCK`` rows (the tail is zero-padded) times at least two center columns (never a
matrix-vector product).  With this shape OpenBLAS computes each (row, center) dot product the
same way wherever the row sits, so any split of the rows into shards gives bit-identical
distances, hence the same centers (tests/test_cluster_sharded.py checks it).

Storage may be float32, float16 or bfloat16 (bf16 kept as its uint16 bit pattern on numpy);
blocks are widened to float32 before the product.  :class:`TorchKernel` is the same kernel on a
torch device (GPU), data resident there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

BLOCK = 1024  # rows per matrix product (the tail block is zero-padded to this many rows)
MIN_COLS = 2  # a product always has >= 2 center columns: matrix-vector BLAS paths round differently
ASSIGN_COLS = 4096  # centers per assignment product (bounds the block × centers temporary)
DTYPES = ("float32", "float16", "bfloat16")


def margin_for(d: int) -> float:
    """Worst-case error of a float32 dot product of two unit vectors of dimension d (plus slack)."""
    return 1e-5 + 4.0 * d * 2.0 ** -24


# ---------------------------------------------------------------------------------- storage
def encode(x: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """float32 rows in the storage dtype (bfloat16 as uint16 bits, rounded to nearest even)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "float32":
        return x
    if dtype == "float16":
        return x.astype(np.float16)
    if dtype == "bfloat16":
        u = x.view(np.uint32)
        return ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    raise ValueError(f"unknown dtype {dtype!r}; use one of {DTYPES}")


def decode(block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 view/copy of stored rows."""
    if block.dtype == np.float32:
        if out is None:
            return block
        out[...] = block
        return out
    if block.dtype == np.float16:
        try:  # torch converts half with F16C; numpy's cast is a scalar loop
            import torch

            res = torch.from_numpy(np.ascontiguousarray(block)).float().numpy()
        except ImportError:  # pragma: no cover
            res = block.astype(np.float32)
        if out is None:
            return res
        out[...] = res
        return out
    if block.dtype == np.uint16:  # bfloat16 bits
        if out is None:
            out = np.empty(block.shape, np.float32)
        np.left_shift(block, 16, out=out.view(np.uint32), dtype=np.uint32)
        return out
    res = block.astype(np.float32)  # float64 and other inputs of the plain functions
    if out is None:
        return res
    out[...] = res
    return out


def storage_name(x: Any) -> str:
    dt = str(getattr(x, "dtype", "float32"))
    return {"uint16": "bfloat16", "torch.float32": "float32", "torch.float16": "float16",
            "torch.bfloat16": "bfloat16"}.get(dt, dt)


# ---------------------------------------------------------------------------------- kernels
class NumpyKernel:
    """Rows of one shard on the CPU and their distance to the nearest center so far.

    ``min_dist`` is +inf before any center, -1 for rows that are centers (never chosen again,
    even among exact duplicates), else ``min over centers of 1 - x·c``.
    """

    def __init__(self, x: np.ndarray, block: int = BLOCK):
        if x.ndim != 2:
            raise ValueError("x must be a 2-D array")
        self.x = x
        self.n, self.d = x.shape
        self.block = block
        self.min_dist = np.full(self.n, np.inf, dtype=np.float32)
        self.n_centers = 0
        self._buf = np.zeros((block, self.d), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.x.nbytes + self.min_dist.nbytes + self._buf.nbytes)

    def _blocks(self):
        """(start, stop, float32 block of exactly ``block`` rows)."""
        x, b = self.x, self.block
        for s in range(0, self.n, b):
            e = min(s + b, self.n)
            if e - s == b and x.dtype == np.float32:
                yield s, e, x[s:e]
            else:
                buf = self._buf
                decode(x[s:e], out=buf[: e - s])
                if e - s < b:
                    buf[e - s:] = 0.0
                yield s, e, buf

    @staticmethod
    def _cols(c: np.ndarray) -> np.ndarray:
        c = np.ascontiguousarray(c, dtype=np.float32).reshape(-1, c.shape[-1])
        if len(c) < MIN_COLS:
            c = np.vstack([c, np.zeros((MIN_COLS - len(c), c.shape[1]), np.float32)])
        return c

    def rows(self, idx) -> np.ndarray:
        return np.array(decode(self.x[np.asarray(idx, dtype=np.int64)]), dtype=np.float32)

    def col_sums(self) -> np.ndarray:
        """Column sums in float64 (block by block: the mean for the first center)."""
        total = np.zeros(self.d, dtype=np.float64)
        for s, e, blk in self._blocks():
            total += np.add.reduce(blk[: e - s], axis=0, dtype=np.float64)
        return total

    def dots(self, v: np.ndarray) -> np.ndarray:
        """x·v for every row (float32)."""
        c = self._cols(v)
        out = np.empty(self.n, dtype=np.float32)
        for s, e, blk in self._blocks():
            out[s:e] = (blk @ c.T)[: e - s, 0]
        return out

    def update(self, centers: np.ndarray) -> None:
        """min_dist = min(min_dist, 1 - max_j x·c_j): one fused pass for a batch of centers."""
        if len(centers) == 0:
            return
        w = len(centers)
        c = self._cols(centers)
        md = self.min_dist
        for s, e, blk in self._blocks():
            sims = blk @ c.T
            best = sims.max(axis=1) if w > 1 else sims[:, 0]
            best = best[: e - s]
            np.subtract(1.0, best, out=best)
            np.minimum(md[s:e], best, out=md[s:e])

    def reset(self) -> None:
        self.min_dist[:] = np.inf
        self.n_centers = 0

    def mark_centers(self, idx) -> None:
        idx = np.unique(np.asarray(idx, dtype=np.int64))
        self.n_centers += int(np.count_nonzero(self.min_dist[idx] != -1.0))
        self.min_dist[idx] = -1.0

    def top(self, m: int) -> tuple[np.ndarray, np.ndarray, int | None]:
        """The m farthest non-center rows, ordered (distance desc, index asc), and the bound.

        Returns (idx, values, bound_idx): every row not returned ranks after row ``bound_idx``
        (smaller distance, or the same distance and a larger index); ``None`` when every
        non-center row was returned.
        """
        return _top(self.min_dist, m, self.n - self.n_centers)

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest center (first max: lowest cluster id on ties) and its similarity, blockwise."""
        c_all = np.ascontiguousarray(centers, dtype=np.float32)
        labels = np.zeros(self.n, dtype=np.int64)
        best = np.full(self.n, -np.inf, dtype=np.float32)
        for s, e, blk in self._blocks():
            lb, bs = labels[s:e], best[s:e]
            for j in range(0, len(c_all), ASSIGN_COLS):
                c = self._cols(c_all[j:j + ASSIGN_COLS])
                sims = (blk @ c.T)[: e - s, : min(ASSIGN_COLS, len(c_all) - j)]
                arg = np.argmax(sims, axis=1)
                val = sims[np.arange(e - s), arg]
                better = val > bs  # strict: an earlier chunk keeps its (lower) cluster id on ties
                lb[better] = arg[better] + j
                bs[better] = val[better]
        return labels, best


def _top(md: np.ndarray, m: int, eligible: int):
    if eligible <= 0 or m <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), None
    if eligible <= m:
        idx = np.flatnonzero(md != -1.0)
        bound = None
    else:
        n = len(md)
        part = np.argpartition(md, n - m)[n - m:]
        vm = md[part].min()
        strict = part[md[part] > vm]
        eq = np.flatnonzero(md == vm)[: m - len(strict)]
        idx = np.concatenate([strict, eq])
        bound = int(eq[-1])
    vals = md[idx]
    order = np.lexsort((idx, -vals))
    return idx[order].astype(np.int64), vals[order].astype(np.float32), bound


class TorchKernel:
    """:class:`NumpyKernel` on a torch device (a GPU when the shard actor was given one).

    Rows stay on the device in their storage dtype (float32, float16 or bfloat16); each block is
    widened to float32 for the product (TF32 off), so distances match the CPU kernel's to float
    rounding.  Same interface as :class:`NumpyKernel`.
    """

    def __init__(self, x: np.ndarray, device: str = "cuda", dtype: str = "float32", block: int = 1 << 15):
        import torch

        self.torch = torch
        torch.backends.cuda.matmul.allow_tf32 = False
        self.device = torch.device(device)
        tdtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
        host = torch.from_numpy(np.ascontiguousarray(decode(x)))
        self.x = host.to(device=self.device, dtype=tdtype)
        self.n, self.d = x.shape
        self.block = block
        self.min_dist = torch.full((self.n,), float("inf"), dtype=torch.float32, device=self.device)
        self.n_centers = 0

    @property
    def nbytes(self) -> int:
        return int(self.x.element_size() * self.x.nelement() + 4 * self.n)

    def _f32(self, s, e):
        return self.x[s:e].float()

    def _t(self, a):
        return self.torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32), device=self.device)

    def rows(self, idx) -> np.ndarray:
        t = self.x[self.torch.as_tensor(np.asarray(idx, dtype=np.int64), device=self.device)]
        return t.float().cpu().numpy()

    def col_sums(self) -> np.ndarray:
        total = self.torch.zeros(self.d, dtype=self.torch.float64, device=self.device)
        for s in range(0, self.n, self.block):
            total += self._f32(s, min(s + self.block, self.n)).sum(0, dtype=self.torch.float64)
        return total.cpu().numpy()

    def dots(self, v: np.ndarray) -> np.ndarray:
        c = self._t(v).reshape(-1)
        out = self.torch.empty(self.n, dtype=self.torch.float32, device=self.device)
        for s in range(0, self.n, self.block):
            e = min(s + self.block, self.n)
            out[s:e] = self._f32(s, e) @ c
        return out.cpu().numpy()

    def update(self, centers: np.ndarray) -> None:
        if len(centers) == 0:
            return
        c = self._t(centers).reshape(-1, self.d)
        md = self.min_dist
        for s in range(0, self.n, self.block):
            e = min(s + self.block, self.n)
            best = (self._f32(s, e) @ c.T).amax(dim=1)
            self.torch.minimum(md[s:e], 1.0 - best, out=md[s:e])

    def reset(self) -> None:
        self.min_dist.fill_(float("inf"))
        self.n_centers = 0

    def mark_centers(self, idx) -> None:
        t = self.torch.as_tensor(np.unique(np.asarray(idx, dtype=np.int64)), device=self.device)
        self.n_centers += int((self.min_dist[t] != -1.0).sum().item())
        self.min_dist[t] = -1.0

    def top(self, m: int):
        torch = self.torch
        eligible = self.n - self.n_centers
        if eligible <= 0 or m <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), None
        md = self.min_dist
        if eligible <= m:
            idx = torch.nonzero(md != -1.0).flatten()
            bound = None
        else:
            vm = torch.topk(md, m).values[-1]
            strict = torch.nonzero(md > vm).flatten()
            eq = torch.nonzero(md == vm).flatten()[: m - len(strict)]
            idx = torch.cat([strict, eq])
            bound = int(eq[-1].item())
        idx = idx.cpu().numpy().astype(np.int64)
        vals = md[torch.as_tensor(idx, device=self.device)].cpu().numpy()
        order = np.lexsort((idx, -vals))
        return idx[order], vals[order].astype(np.float32), bound

    def assign(self, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        c_all = self._t(centers).reshape(-1, self.d)
        labels = torch.zeros(self.n, dtype=torch.int64, device=self.device)
        best = torch.full((self.n,), -float("inf"), dtype=torch.float32, device=self.device)
        rows = max(1, min(self.block, (1 << 26) // max(1, min(len(c_all), ASSIGN_COLS))))
        for s in range(0, self.n, rows):
            e = min(s + rows, self.n)
            blk = self._f32(s, e)
            for j in range(0, len(c_all), ASSIGN_COLS):
                sims = blk @ c_all[j:j + ASSIGN_COLS].T
                arg = torch.argmax(sims, dim=1)  # documented: the first maximal index
                val = sims.gather(1, arg[:, None])[:, 0]
                better = val > best[s:e]
                labels[s:e] = torch.where(better, arg + j, labels[s:e])
                best[s:e] = torch.where(better, val, best[s:e])
        return labels.cpu().numpy(), best.cpu().numpy()


def make_kernel(x: np.ndarray, device: str = "cpu", dtype: str | None = None):
    """The kernel for stored rows ``x``: numpy on "cpu", torch on anything else ("cuda", "cuda:1")."""
    if device in ("cpu", "numpy"):
        return NumpyKernel(x)
    return TorchKernel(x, device=device, dtype=dtype or storage_name(x))


# ------------------------------------------------------------------------ batched exact rounds
@dataclass
class Candidates:
    """One shard's report after a pass: its farthest rows and the bound on all the others."""

    vals: np.ndarray  # float32 current distances, ordered (desc, key asc)
    keys: np.ndarray  # tie-break keys (row index, or id bytes): lower wins
    local: np.ndarray  # row positions inside the shard
    vecs: np.ndarray  # float32 rows
    bound: tuple[float, Any] | None  # (value, key) of the last reported row; None: all reported
    seconds: float = 0.0  # time the shard spent on the pass


def pick_batch(reports: Sequence[Candidates | None], want: int, margin: float,
               exact: bool = True) -> list[tuple[int, int]]:
    """Up to ``want`` next centers, exactly those the one-at-a-time loop would choose next.

    Returns (shard, position in that shard's report) in choice order.  Always at least one when
    any row is left: the best reported row is certainly the farthest of all.

    ``exact``: the reported rows' new distances are recomputed here with the kernel's call shape,
    bit-identical to what the (numpy) shards compute, so every value stays exact.  Otherwise
    (shards on other hardware) each row keeps an interval ``[lb, ub]`` widened by ``margin`` (the
    float32 error bound) once a chosen center may have moved it, and a pick must beat every
    interval and every shard's bound for sure; else the batch ends there.
    """
    parts = [(s, r) for s, r in enumerate(reports) if r is not None and len(r.vals)]
    if not parts or want <= 0:
        return []
    vals = np.concatenate([r.vals for _, r in parts]).astype(np.float32)
    keys = np.concatenate([np.asarray(r.keys) for _, r in parts])
    owner = np.concatenate([np.full(len(r.vals), s, dtype=np.int64) for s, r in parts])
    pos = np.concatenate([np.arange(len(r.vals), dtype=np.int64) for _, r in parts])
    vecs32 = np.concatenate([np.asarray(r.vecs, dtype=np.float32) for _, r in parts])
    vecs = None if exact else vecs32.astype(np.float64)
    pool = NumpyKernel(vecs32) if exact else None
    bounds = [r.bound for r in reports if r is not None and r.bound is not None]
    if bounds:
        bv = max(float(b[0]) for b in bounds)
        bk = min(b[1] for b in bounds if float(b[0]) == bv)
    lb = vals.astype(np.float64)
    ub = lb.copy()
    is_exact = np.ones(len(vals), dtype=bool)
    used = np.zeros(len(vals), dtype=bool)
    picked: list[int] = []
    while len(picked) < want:
        left = np.flatnonzero(~used)
        if len(left) == 0:
            break
        i = int(left[np.lexsort((keys[left], -lb[left]))[0]])
        if bounds:
            if not (lb[i] > bv or (is_exact[i] and (vals[i] > bv or (vals[i] == bv and keys[i] <= bk)))):
                break
        others = left[left != i]
        if len(others):
            sure = lb[i] > ub[others]
            if is_exact[i]:
                ex = is_exact[others]
                sure |= ex & ((vals[others] < vals[i]) | ((vals[others] == vals[i]) & (keys[others] > keys[i])))
            if not sure.all():
                break
        picked.append(i)
        used[i] = True
        if exact:
            vals = np.minimum(vals, np.subtract(1.0, pool.dots(vecs32[i]), dtype=np.float32))
            lb = ub = vals.astype(np.float64)
        else:
            s = 1.0 - vecs @ vecs[i]
            moved = s <= ub + margin
            is_exact &= ~moved
            np.minimum(ub, s + margin, out=ub)
            np.minimum(lb, s - margin, out=lb)
    return [(int(owner[i]), int(pos[i])) for i in picked]


@dataclass
class Entry:
    """A chosen center: which shard holds it, where, its key and its vector."""

    shard: int
    local: int
    key: Any
    vec: np.ndarray


Step = Callable[[list[Entry], int], list]
_controller = None


def _one_blas_thread():
    global _controller
    try:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        return _controller.limit(limits=1, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl missing
        import contextlib

        return contextlib.nullcontext()  # (centers chosen since the last pass, m) -> reports


def greedy(step: Step, k: int, seeds: list[Entry], batch: int = 32, m: int | None = None,
           margin: float = 1e-4, exact: bool = True, final_update: bool = True,
           stats: dict | None = None) -> list[Entry]:
    """Farthest-first rounds driven over any set of shards.

    ``step(new_centers, m)`` applies the centers chosen since the previous call to every shard
    (fused update, centers marked) and returns each shard's :class:`Candidates` (its ``m``
    farthest rows), or nothing when ``m`` is 0.  ``seeds`` are the first centers.
    """
    chosen = list(seeds[:k])
    pending = list(chosen)
    m = m or 2 * batch + 2
    rounds = sizes = 0
    shard_s = 0.0
    while len(chosen) < k:
        reports = step(pending, m)
        rounds += 1
        shard_s += max((r.seconds for r in reports if r is not None), default=0.0)
        with _one_blas_thread():  # tiny products: thread hand-offs would cost more than the work
            picks = pick_batch(reports, min(batch, k - len(chosen)), margin, exact)
        if not picks:  # every row is a center already
            break
        pending = [Entry(s, int(reports[s].local[p]), reports[s].keys[p], reports[s].vecs[p]) for s, p in picks]
        chosen.extend(pending)
        sizes += len(pending)
    if final_update and pending:
        step(pending, 0)
    if stats is not None:
        stats.update(rounds=rounds, centers_per_round=(sizes / rounds if rounds else 0.0), shard_seconds=shard_s)
    return chosen


def local_step(kern, keys: np.ndarray | None = None) -> Step:
    """A :data:`Step` over one in-process kernel (keys default to row indices)."""
    import time

    def step(pending: list[Entry], m: int):
        t0 = time.perf_counter()
        if pending:
            kern.update(np.stack([e.vec for e in pending]))
            own = [e.local for e in pending if e.shard == 0 and e.local >= 0]
            if own:
                kern.mark_centers(own)
        if m == 0:
            return []
        idx, vals, bound = kern.top(m)
        k_ = idx if keys is None else keys[idx]
        b = None if bound is None else (vals[-1], k_[-1])  # the last reported row is the bound row
        return [Candidates(vals, k_, idx, kern.rows(idx), b, time.perf_counter() - t0)]

    return step


# ------------------------------------------------------------------------------ public API
def first_center(x: np.ndarray) -> int:
    """The row least aligned with the mean direction: an edge row, like every later center.

    Farthest-first is a 2-approximation of the best radius from any first center (Gonzalez), so
    the seed is free; the row nearest the mean, the usual choice, is the most generic row of the
    pool (a content-poor hub: "what can you do", "test") and would be a center, the kcenter
    baseline's first pick and the head of the largest cluster.  From an edge row the hub becomes
    a center only if it is farther than the radius from every other center.  Deterministic, one
    pass of dot products, the same for any sharding (lowest index wins ties)."""
    kern = x if isinstance(x, (NumpyKernel, TorchKernel)) else NumpyKernel(x)
    if kern.n == 0:
        raise ValueError("no rows")
    mean = (kern.col_sums() / kern.n).astype(np.float32)
    return int(np.argmin(kern.dots(mean)))  # first minimum: lowest index wins ties


def farthest_first(x: np.ndarray, k: int, initial: list[int] | None = None,
                   batch: int = 32, stats: dict | None = None,
                   prior: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of k centers in the order chosen, and every row's distance to its nearest center.

    ``initial`` rows (e.g. already-annotated items) are centers before the greedy rounds start;
    they count towards k.  ``prior``: center vectors that are not rows of ``x`` (earlier
    selections): every distance starts from them, they do not count towards k.  Without either
    the first center is :func:`first_center`.  ``batch`` is how many exact rounds one pass over
    the rows may serve (the answer does not depend on it).
    """
    n = len(x)
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.full(n, np.inf, dtype=np.float32)
    kern = NumpyKernel(x)
    has_prior = prior is not None and len(prior) > 0
    for s in range(0, len(prior) if has_prior else 0, 1024):
        kern.update(np.asarray(prior[s:s + 1024], dtype=np.float32))
    seeds = list(dict.fromkeys(int(i) for i in (initial or []))) or ([] if has_prior else [first_center(kern)])
    entries = [Entry(0, c, c, kern.rows([c])[0]) for c in seeds[:k]]
    chosen = greedy(local_step(kern), k, entries, batch=batch, margin=margin_for(kern.d), stats=stats)
    return np.asarray([e.local for e in chosen], dtype=np.int64), np.maximum(kern.min_dist, 0.0)


def farthest_first_sequential(x: np.ndarray, k: int, initial: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The textbook loop (one full pass over x per center, ``x @ c`` by BLAS): the baseline."""
    n = len(x)
    k = min(k, n)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    centers: list[int] = []
    seeds = list(dict.fromkeys(initial or [])) or ([int(np.argmin(x @ x.mean(0, dtype=np.float64).astype(np.float32)))]
                                                    if n else [])
    block = 1 << 16

    def upd(c):
        for s in range(0, n, block):
            sims = x[s:s + block] @ x[c]
            np.subtract(1.0, sims, out=sims)
            np.minimum(min_dist[s:s + block], sims, out=min_dist[s:s + block])

    for c in seeds[:k]:
        centers.append(int(c))
        upd(c)
        min_dist[c] = -1.0
    while len(centers) < k:
        nxt = int(np.argmax(min_dist))
        centers.append(nxt)
        upd(nxt)
        min_dist[nxt] = -1.0
    return np.asarray(centers, dtype=np.int64), np.maximum(min_dist, 0.0)


def assign(x: np.ndarray, centers: np.ndarray, block: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Nearest center (position in ``centers``) and cosine distance for every row, blockwise."""
    centers = np.asarray(centers, dtype=np.int64)
    kern = NumpyKernel(x)
    labels, best = kern.assign(kern.rows(centers))
    dist = np.subtract(1.0, best, dtype=np.float32)
    labels[centers] = np.arange(len(centers))  # a center belongs to its own cluster even on ties
    dist[centers] = 0.0
    return labels, np.maximum(dist, 0.0)
