"""k-center benchmark: kernel vs memory bandwidth, distributed exact rounds, coreset, sklearn baseline.

Prints one JSON object (and writes it to --out).  Sections (--sections, comma separated):

* ``kernel``: on one core, the machine's read bandwidth on the pool array (``x.sum(axis=0)``, and
  a dot product with a vector of ones), the fused single-center update's point-updates/s and its
  ratio to that bandwidth (bytes per point = the row), and the batched update (b centers per pass).
* ``distributed``: ``--shards`` Ray actors (1 CPU each) holding a synthetic normalized pool,
  exact farthest-first for k centers + assignment; rounds, centers per round, round overhead
  (wall time of a round minus its slowest shard), memory per actor; against the single-process
  numpy loop (one ``x @ c`` pass per center, 1 thread) per core, and whether the centers are the
  ones of the single-process batched kernel (``kcenter.farthest_first``) and of that loop.
* ``coreset``: radius of coreset mode (tau = c·k per shard, c in --coreset-factors) / exact radius.
* ``sklearn``: the per-iteration ``sklearn.metrics.pairwise_distances`` loop common in
  active-learning code, timed for --sklearn-iters iterations and scaled to k.

  python benchmarks/bench_kcenter.py --n 100000 --k 1000 --shards 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def best_of(f, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_section(x: np.ndarray) -> dict:
    from threadpoolctl import threadpool_limits

    from selectllm.cluster import kcenter as K

    n, d = x.shape
    row_bytes = x.itemsize * d
    out: dict = {"rows": n, "dim": d, "array_gb": round(x.nbytes / 1e9, 3), "threads": 1}
    with threadpool_limits(1):
        ones = np.ones(d, np.float32)
        bw_sum = x.nbytes / best_of(lambda: x.sum(axis=0), 5)
        bw_dot = x.nbytes / best_of(lambda: np.einsum("ij,j->i", x, ones), 5)
        bw = max(bw_sum, bw_dot)
        out["read_bandwidth_gbs"] = round(bw / 1e9, 2)
        out["read_bandwidth_sum_gbs"] = round(bw_sum / 1e9, 2)
        out["read_bandwidth_einsum_gbs"] = round(bw_dot / 1e9, 2)
        md = np.full(n, np.inf, np.float32)
        c = x[7].copy()

        def plain():  # the textbook numpy loop body: x @ c, 1 - s, minimum
            for s in range(0, n, 1 << 16):
                sims = x[s:s + (1 << 16)] @ c
                np.subtract(1.0, sims, out=sims)
                np.minimum(md[s:s + (1 << 16)], sims, out=md[s:s + (1 << 16)])

        t = best_of(plain, 5)
        out["plain_loop_updates_per_s"] = round(n / t)
        out["plain_loop_bandwidth_ratio"] = round(n * row_bytes / t / bw, 3)
        kern = K.NumpyKernel(x)
        for b in (1, 8, 32, 64):
            cs = x[np.arange(b) * 13 + 1]
            t = best_of(lambda: kern.update(cs), 5 if b == 1 else 3)
            out[f"kernel_b{b}_updates_per_s"] = round(n * b / t)
            out[f"kernel_b{b}_bandwidth_ratio"] = round(n * b * row_bytes / t / bw, 3)
    return out


def sequential_rate(x: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Point-updates/s of the single-process loop (one pass per center, 1 thread)."""
    from threadpoolctl import threadpool_limits

    from selectllm.cluster import kcenter as K

    with threadpool_limits(1):
        t0 = time.perf_counter()
        centers, _ = K.farthest_first_sequential(x, k)
        t = time.perf_counter() - t0
    return len(x) * len(centers) / t, centers


def distributed_section(args, x: np.ndarray | None) -> dict:
    import ray

    from selectllm.cluster import kcenter as K
    from selectllm.cluster.sharded import ShardGroup, run_kcenter

    n, d, k, r = args.n, args.d, args.k, args.shards
    if not ray.is_initialized():
        ray.init(num_cpus=r, include_dashboard=False, logging_level="WARNING")
    cuts = np.linspace(0, n, r + 1).astype(int)
    srcs = [("synthetic", dict(n=n, d=d, seed=args.seed, start=int(a), stop=int(b)))
            for a, b in zip(cuts[:-1], cuts[1:])]
    out: dict = {"rows": n, "dim": d, "k": k, "shards": r}
    t0 = time.perf_counter()
    group = ShardGroup.start(srcs, dtype=args.dtype, remote=True, num_cpus=1)
    out["start_and_load_seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    pings = 200
    for _ in range(pings):
        group.call("ping")
    out["empty_round_trip_ms"] = round((time.perf_counter() - t0) / pings * 1e3, 3)
    try:
        res = run_kcenter(group, k, batch=args.batch)
        infos = group.call("info")
        coreset = {}
        for c in args.coreset_factors:
            rc = run_kcenter(group, k, mode="coreset", coreset_factor=c, batch=args.batch)
            coreset[f"c={c:g}"] = {"radius": round(float(rc.radii.max()), 5),
                                   "radius_ratio_vs_exact": round(float(rc.radii.max() / res.radii.max()), 4),
                                   "select_seconds": round(rc.stats["select_seconds"], 2),
                                   "coreset_size": rc.stats["coreset_size"]}
    finally:
        group.close()
    st = res.stats
    out.update({
        "select_seconds": round(st["select_seconds"], 3),
        "assign_seconds": round(st["assign_seconds"], 3),
        "rounds": st["rounds"],
        "centers_per_round": round(st["centers_per_round"], 2),
        "round_overhead_seconds": round(st["round_overhead_seconds"], 3),
        "round_overhead_ms_per_round": round(st["round_overhead_seconds"] / max(1, st["rounds"]) * 1e3, 2),
        "coordinator_seconds": round(st["coordinator_seconds"], 3),
        "radius": round(float(res.radii.max()), 5),
        "select_updates_per_s": round(n * k / st["select_seconds"]),
        "select_updates_per_s_per_core": round(n * k / st["select_seconds"] / r),
        "memory_per_actor": [{"rows": i["n"], "kernel_mb": round(i["kernel_bytes"] / 2**20, 1),
                              "ids_mb": round(i["id_bytes"] / 2**20, 1),
                              "max_rss_mb": round(i["max_rss_bytes"] / 2**20, 1)} for i in infos],
    })
    if coreset:
        out["coreset"] = coreset
    keys = [int(v) for v in res.keys]
    if x is not None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            t0 = time.perf_counter()
            single, _ = K.farthest_first(x, k, batch=args.batch)
            out["single_process_batched_seconds"] = round(time.perf_counter() - t0, 2)
        out["same_centers_as_single_process_kernel"] = keys == single.tolist()
        kb = min(k, args.baseline_k)
        rate, seq = sequential_rate(x, kb)
        out["numpy_loop_updates_per_s_1core"] = round(rate)
        out["numpy_loop_centers_timed"] = kb
        out["per_core_speed_vs_numpy_loop"] = round(n * k / st["select_seconds"] / r / rate, 2)
        agree = int(np.argmin(np.asarray(keys[:kb]) == seq)) if (np.asarray(keys[:kb]) != seq).any() else kb
        out["centers_equal_to_numpy_loop_prefix"] = agree
        if agree < kb:  # a different but equally valid choice: the two rows' distances differ by float rounding
            md = np.full(len(x), np.inf, np.float32)
            for c in seq[:agree]:
                md = np.minimum(md, 1.0 - x @ x[c])
                md[c] = -1
            out["at_first_difference_distance_gap"] = float(abs(md[keys[agree]] - md[seq[agree]]))
    return out


def sklearn_section(args, x: np.ndarray) -> dict:
    """The per-iteration pairwise_distances loop (as in common active-learning k-center code)."""
    from sklearn.metrics import pairwise_distances

    from selectllm.cluster import kcenter as K

    n = len(x)
    first = K.first_center(x)
    iters = min(args.k, args.sklearn_iters)
    min_d = None
    chosen = [first]
    t0 = time.perf_counter()
    for _ in range(iters):
        dist = pairwise_distances(x, x[[chosen[-1]]], metric="cosine")
        min_d = dist if min_d is None else np.minimum(min_d, dist)
        chosen.append(int(np.argmax(min_d)))
    t = time.perf_counter() - t0
    per_iter = t / iters
    out = {"rows": n, "k": args.k, "iterations_timed": iters, "seconds_per_iteration": round(per_iter, 4),
           "projected_seconds_for_k": round(per_iter * args.k, 1)}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        t0 = time.perf_counter()
        ours, _ = K.farthest_first(x, args.k, batch=args.batch)
        t1 = time.perf_counter() - t0
    out["ours_single_process_1thread_seconds"] = round(t1, 2)
    out["speedup_single_process_1thread"] = round(per_iter * args.k / t1, 1)
    out["same_first_centers"] = int(np.argmin(np.asarray(chosen[: iters]) == ours[:iters])) \
        if (np.asarray(chosen[:iters]) != ours[:iters]).any() else iters
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", default="kernel,distributed")
    ap.add_argument("--coreset-factors", type=lambda s: [float(v) for v in s.split(",") if v], default=[1, 2, 4])
    ap.add_argument("--baseline-k", type=int, default=200, help="centers timed for the numpy-loop baseline")
    ap.add_argument("--sklearn-iters", type=int, default=100)
    ap.add_argument("--no-single", action="store_true", help="skip the single-process comparisons")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from selectllm.cluster.sharded import synthetic_rows

    sections = set(args.sections.split(","))
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_avg_at_start": os.getloadavg(), "gpu": None},
                    "args": {k: v for k, v in vars(args).items() if k != "out"}}
    x = None
    if sections & {"kernel", "sklearn"} or ("distributed" in sections and not args.no_single):
        _, x = synthetic_rows(args.n, args.d, args.seed, 0, args.n)
    if "kernel" in sections:
        result["kernel"] = kernel_section(x)
        print(json.dumps({"kernel": result["kernel"]}), file=sys.stderr)
    if "sklearn" in sections:
        result["sklearn"] = sklearn_section(args, x)
        print(json.dumps({"sklearn": result["sklearn"]}), file=sys.stderr)
    if "distributed" in sections:
        if "coreset" not in sections:
            args.coreset_factors = []
        result["distributed"] = distributed_section(args, None if args.no_single else x)
    result["machine"]["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
