"""What a week's run pays for its programme's history, as the history grows.

The parts of a run that read the whole history (README "Continuous selection") are two Spark
joins in ``dedup``: the anti-join of the week's rows against every id seen before (``seen/``),
and the join of the week's band keys against the MinHash rows of every row kept before
(``minhash/``: :func:`selectllm.dedup.near._history_candidates`).  Everything else a run adds
or reads is the size of the week (its own ``seen/`` and ``minhash/`` files, copied as bytes) or
of the budget (earlier selections' vectors).  This script times the two joins, with the very
functions the stage uses, against synthetic histories of growing size (random ids and band keys,
shingle hashes of a typical row's size; a share of the week's rows copies a history row's keys,
as near copies do), and reports seconds and stored bytes per history row, so a large programme
(8 weeks of 1M rows) can be stated from the measured slope.

Prints one JSON object: per history size, ``seen_join_s``, ``band_join_s``, the candidates found,
stored bytes per row (``seen``, ``minhash``); and the least-squares slopes (seconds per million
history rows).  Example:
``python benchmarks/bench_history_scale.py --week-rows 100000 --sizes 250000,500000,1000000``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from selectllm.config import load_config  # noqa: E402

BANDS = 21  # dedup.near defaults: threshold 0.7, 128 permutations -> 21 bands of 6 rows
SH_BYTES = 384  # a row's uint32 word 5-gram hashes: ~100 words


def _ids(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array([f"{x:032x}" for x in rng.integers(0, 2**63, size=n)], pa.string())


def _binary(rng: np.random.Generator, n: int, width: int) -> pa.Array:
    data = rng.integers(0, 256, size=n * width, dtype=np.uint8)
    off = np.arange(n + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(off), pa.py_buffer(data)])


def write_history(folder: Path, rng: np.random.Generator, n: int, parts: int = 8) -> tuple[int, int, pa.Table]:
    """``seen/`` and ``minhash/`` of ``n`` history rows; returns (seen bytes, minhash bytes, a
    sample of rows whose keys the week copies)."""
    (folder / "seen").mkdir(parents=True)
    (folder / "minhash").mkdir(parents=True)
    sample = None
    step = -(-n // parts)
    for p in range(parts):
        m = min(step, n - p * step)
        if m <= 0:
            break
        ids = _ids(rng, m)
        table = pa.table({"id": ids, "bands": _binary(rng, m, BANDS * 8), "sh": _binary(rng, m, SH_BYTES)})
        pq.write_table(pa.table({"id": ids}), folder / "seen" / f"part-{p:05d}.parquet")
        pq.write_table(table, folder / "minhash" / f"part-{p:05d}.parquet")
        if sample is None:
            sample = table.slice(0, min(m, 1000))
    size = lambda d: sum(f.stat().st_size for f in (folder / d).glob("*.parquet"))  # noqa: E731
    return size("seen"), size("minhash"), sample


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--week-rows", type=int, default=100_000)
    ap.add_argument("--sizes", default="250000,500000,1000000", help="history rows, comma separated")
    ap.add_argument("--near-share", type=float, default=0.01, help="share of the week copying a history row's keys")
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from pyspark.sql import functions as F

    from selectllm.dedup.budget import BroadcastBudget, bounded_broadcasts
    from selectllm.dedup.near import _DOCS_DDL, SIGNED, _history_candidates
    from selectllm.engines import spark_session
    from selectllm.io import spark_read_parquet

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-history-scale-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spark = spark_session(load_config(None, ["spark.master=local[2]"]))
    rng = np.random.default_rng(0)
    out = {"args": vars(args), "sizes": []}
    for n in [int(x) for x in args.sizes.split(",")]:
        folder = work / f"h{n}"
        seen_b, minhash_b, sample = write_history(folder, rng, n)
        # the week: fresh rows, a share of them with a history row's keys (near copies), and a share
        # repeating a history id (exact repeats)
        w = args.week_rows
        copies = min(len(sample), int(args.near_share * w))
        ids = pa.concat_arrays([_ids(rng, w - copies), sample.column("id").slice(0, copies).combine_chunks()])
        bands = pa.concat_arrays([_binary(rng, w - copies, BANDS * 8), sample.column("bands").slice(0, copies).combine_chunks()])
        week = pa.table({"node": pa.array(np.arange(w) + (1 << 40)), "id": ids, "source": pa.array(["w"] * w),
                         "source_row": pa.array(np.arange(w)), "bands": bands, "sh": _binary(rng, w, SH_BYTES)})
        pq.write_table(week, folder / "week.parquet")
        docs = spark.read.parquet(str(folder / "week.parquet")).selectExpr(
            *[f"CAST({c.split()[0]} AS {c.split()[1]}) AS {c.split()[0]}" for c in _DOCS_DDL.split(", ")]).cache()
        docs.count()
        seen = spark_read_parquet(spark, str(folder / "seen"), pa.schema([("id", pa.string())]), ["id"])
        history = spark_read_parquet(spark, str(folder / "minhash"), SIGNED, SIGNED.names)
        with bounded_broadcasts(spark, BroadcastBudget.of(spark)):  # as in the dedup stage
            t = time.perf_counter()
            kept = docs.select("id").join(seen, "id", "left_anti").count()
            seen_s = time.perf_counter() - t
            t = time.perf_counter()
            found = _history_candidates(docs, history).agg(F.count(F.lit(1))).first()[0]
            band_s = time.perf_counter() - t
        docs.unpersist()
        row = {"history_rows": n, "week_rows": w, "kept_after_seen": kept, "candidates": int(found),
               "seen_join_s": round(seen_s, 2), "band_join_s": round(band_s, 2),
               "seen_bytes_per_row": round(seen_b / n, 1), "minhash_bytes_per_row": round(minhash_b / n, 1),
               "driver_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        out["sizes"].append(row)
        print(json.dumps(row), file=sys.stderr)
        shutil.rmtree(folder)
    xs = np.array([r["history_rows"] for r in out["sizes"]], dtype=float) / 1e6
    for key in ("seen_join_s", "band_join_s"):
        ys = np.array([r[key] for r in out["sizes"]])
        if len(xs) >= 2:
            slope, icpt = np.polyfit(xs, ys, 1)
            out[f"{key}_per_million_history_rows"] = round(float(slope), 3)
            out[f"{key}_intercept"] = round(float(icpt), 3)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    spark.stop()
    os._exit(0)


if __name__ == "__main__":
    main()
