"""Near-duplicate removal as a Spark plan: banded MinHash LSH, verification, connected components.

:func:`find_near_duplicates` takes rows with the DEDUP columns (the exact-deduplicated rows of
the ``dedup`` stage) and returns the rows to remove, each pointing at the row it keeps.  The
maths are in :mod:`selectllm.text.minhash`; this module only moves data to them.

1. **Node ids.**  Every row gets ``node = file_rank << 40 | source_row`` where ``file_rank`` is
   the rank of its ``source`` among the distinct sources (string order).  So node order is
   ``(source, source_row)`` order, the same order as exact dedup's keeper rule, and ids do not
   depend on partitioning.  (Limits: < 2^23 files, < 2^40 rows per file; checked.)
2. **Signatures** (``mapInArrow``, numpy over whole Arrow batches): shingle sets of
   :func:`~selectllm.text.minhash.shingle_text` (normalized instruction + input), MinHash
   signatures and ``bands`` band keys per row.  The table ``(node, id, source, source_row,
   bands, sh)`` is persisted; ``sh`` holds the row's uint32 shingle hashes as raw bytes (or,
   when ``verify`` is off, its signature).  Rows without shingles (empty after normalization)
   get no band: they are never near duplicates.
3. **Candidates**: rows exploded to ``(band, key, node)`` and counted by ``(band, key)``; the
   shared buckets (2+ rows; usually few, then broadcast) are joined back to their rows.
   A bucket of ``2..max_bucket`` rows gives all its pairs; a *giant* bucket (more than
   ``max_bucket`` rows, e.g. a shared boilerplate preamble) gives only the pairs
   ``(centre, other)`` - linear, never quadratic - and is counted in the metrics.  The centre is
   the member with the smallest ``xxhash64(node, band)``: the bands of one group of rows get
   different centres, so a member unlike one centre still meets others.
4. **Verification**: every candidate pair gets the true Jaccard of its two shingle sets
   (``verify: true``, the default) or the MinHash estimate (``verify: false``); pairs at or
   above ``threshold`` are the edges of the similarity graph (a pair found in several bands
   counts once).  Pairs of ordinary buckets are checked inside the bucket (one ``collect_list``
   of the members' sets per bucket, all pairs in numpy), star pairs of giant buckets by joining
   both rows.  The rows of shared buckets are broadcast when they fit in ``BROADCAST_BYTES``
   (else shuffle joins).  ``pair_checks`` in the metrics counts the comparisons made.
5. **Connected components** of that graph in Spark
   (:func:`selectllm.dedup.components.connected_components`): component = smallest node.
6. **Keeper** of a component: its smallest node, i.e. the member with the smallest
   ``(source, source_row)`` - the same rule as exact dedup, independent of partitioning.  Every
   other member is removed with ``duplicate_of`` = the keeper's id and ``similarity`` = the
   Jaccard (true, or estimated when ``verify`` is off) **between that row and the keeper**.
   Through a chain A~B~C, C can be removed for A with a similarity below the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from selectllm.config import Config
from selectllm.dedup.components import cut_lineage
from selectllm.errors import UserError

ROW_BITS = 40  # node = file_rank << ROW_BITS | source_row
FILE_BITS = 63 - ROW_BITS
BATCH_CHARS = 4 << 20  # characters normalized and shingled per numpy pass inside one Arrow batch
BROADCAST_BYTES = 256 << 20  # rows in candidate pairs are broadcast to the pairs below this size
PAIR_CHUNK = 100_000  # pairs of one bucket batch compared per numpy pass
VERIFY_IN_BUCKETS = True

_DOCS_DDL = ("node bigint, id string, source string, source_row bigint, "
             "bands array<bigint>, sh binary")
_SCORED_DDL = "src bigint, dst bigint, sim double"


@dataclass
class NearResult:
    """``removed``: ``(id, duplicate_of, similarity float, source, source_row)``, checkpointed."""

    removed: object
    metrics: dict = field(default_factory=dict)
    edges: object = None  # (src, dst, sim) of the similarity graph, when asked for (checkpointed)


# ----------------------------------------------------------------------------- Python passes
def _signer(ngram: int, kind: str, num_perm: int, bands: int, rows: int, verify: bool):
    """mapInArrow function: (node, id, source, source_row, instruction, input) -> docs table."""

    def sign(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.text.minhash import band_keys, shingle_sets, shingle_text, signatures

        for batch in batches:
            instr = batch.column("instruction").to_pylist()
            inp = batch.column("input").to_pylist()
            start, n = 0, batch.num_rows
            while start < n:  # bound numpy memory: cut the Arrow batch by characters
                stop, chars = start, 0
                while stop < n and (stop == start or chars < BATCH_CHARS):
                    chars += len(instr[stop] or "") + len(inp[stop] or "")
                    stop += 1
                texts = [shingle_text(a, b) for a, b in zip(instr[start:stop], inp[start:stop])]
                offsets, values = shingle_sets(texts, ngram, kind)
                sig = signatures(offsets, values, num_perm)
                keys = band_keys(sig, bands, rows)
                has = np.diff(offsets) > 0
                band_off = np.concatenate(([0], np.cumsum(np.where(has, bands, 0)))).astype(np.int32)
                band_list = pa.ListArray.from_arrays(pa.array(band_off), pa.array(keys[has].ravel()))
                if verify:  # the row's uint32 shingle hashes, as raw bytes (cheap in Spark)
                    sh = _binary(offsets * 4, values.view(np.uint8))
                else:  # its signature
                    sh = _binary(np.arange(stop - start + 1, dtype=np.int64) * num_perm * 4,
                                 np.ascontiguousarray(sig).view(np.uint8).ravel())
                part = batch.slice(start, stop - start)
                yield pa.RecordBatch.from_arrays(
                    [part.column("node"), part.column("id"), part.column("source"),
                     part.column("source_row"), band_list, sh],
                    names=["node", "id", "source", "source_row", "bands", "sh"])
                start = stop

    return sign


def _binary(byte_offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A binary Arrow array from byte offsets (int64, from 0) and one uint8 buffer."""
    off = byte_offsets.astype(np.int32 if byte_offsets[-1] < 2**31 else np.int64)
    typ = pa.binary() if off.dtype == np.int32 else pa.large_binary()
    return pa.Array.from_buffers(typ, len(off) - 1, [None, pa.py_buffer(off), pa.py_buffer(data)])


def _uint32_lists(col) -> tuple[np.ndarray, np.ndarray]:
    """(offsets in values, from 0; flat uint32 values) of a binary column made by :func:`_binary`."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    _, off_buf, data_buf = col.buffers()
    width = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    off = np.frombuffer(off_buf, dtype=width)[col.offset:col.offset + len(col) + 1].astype(np.int64)
    if data_buf is None or not len(col):
        return off - off[0], np.zeros(0, np.uint32)
    data = np.frombuffer(data_buf, dtype=np.uint8)[off[0]:off[-1]]
    return (off - off[0]) // 4, data.view(np.uint32)  # each value is 4 bytes


def _scorer(verify: bool, num_perm: int):
    """mapInArrow function: (src, dst, a, b) -> (src, dst, sim) with the Jaccard of a and b."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.text.minhash import estimate_jaccard, jaccard_sets

        for batch in batches:
            (ao, av), (bo, bv) = _uint32_lists(batch.column("a")), _uint32_lists(batch.column("b"))
            if verify:
                sim = jaccard_sets(ao, av, bo, bv)
            else:
                sim = estimate_jaccard(av.reshape(-1, num_perm), bv.reshape(-1, num_perm))
            yield pa.RecordBatch.from_arrays([batch.column("src"), batch.column("dst"), pa.array(sim)],
                                             names=["src", "dst", "sim"])

    return score


def _bucket_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Member indices ``(i, j)``, ``i < j`` inside each bucket (buckets = consecutive members)."""
    out_i, out_j = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for m in np.unique(sizes):
        if m < 2:
            continue
        ti, tj = np.triu_indices(int(m), 1)
        base = starts[sizes == m][:, None]
        out_i.append((base + ti[None, :]).ravel())
        out_j.append((base + tj[None, :]).ravel())
    return np.concatenate(out_i), np.concatenate(out_j)


def _gather(offsets: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sets ``idx`` (as ``(offsets, values)``) taken out of ``(offsets, values)``."""
    lens = offsets[idx + 1] - offsets[idx]
    new = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    pos = np.repeat(offsets[idx] - new[:-1], lens) + np.arange(new[-1], dtype=np.int64)
    return new, values[pos]


def _bucket_scorer(verify: bool, num_perm: int, threshold: float):
    """mapInArrow function: one row per bucket, ``m = list<struct<node, sh>>`` -> ``(src, dst,
    sim)`` for every pair of members at or above ``threshold``, and one row ``(-1, checked, -1)``
    per batch counting the pairs checked.  Members' sets cross Arrow once per bucket, not per pair."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.text.minhash import jaccard_sets

        for batch in batches:
            col = batch.column("m")
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            lo = col.offsets.to_numpy().astype(np.int64)
            flat = col.flatten()
            nodes = flat.field("node").to_numpy(zero_copy_only=False)
            so, sv = _uint32_lists(flat.field("sh"))
            ii, jj = _bucket_pairs(lo[:-1] - lo[0], np.diff(lo))
            src, dst, sim = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
            for c in range(0, len(ii), PAIR_CHUNK):
                i, j = ii[c:c + PAIR_CHUNK], jj[c:c + PAIR_CHUNK]
                if verify:
                    s = jaccard_sets(*_gather(so, sv, i), *_gather(so, sv, j))
                else:
                    sig = sv.reshape(-1, num_perm)
                    s = (sig[i] == sig[j]).mean(axis=1)
                keep = s >= threshold
                a, b = nodes[i[keep]], nodes[j[keep]]
                src.append(np.minimum(a, b))
                dst.append(np.maximum(a, b))
                sim.append(s[keep])
            src.append(np.array([-1]))
            dst.append(np.array([len(ii)]))
            sim.append(np.array([-1.0]))
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.concatenate(src)), pa.array(np.concatenate(dst)), pa.array(np.concatenate(sim))],
                names=["src", "dst", "sim"])

    return score


# ----------------------------------------------------------------------------- the plan
def _with_nodes(df):
    """df + ``node`` (bigint): (file rank among distinct sources) << ROW_BITS | source_row."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    files = df.select("source").distinct()
    files = files.withColumn("_file", F.row_number().over(Window.orderBy("source")) - 1)
    # one row per input file: broadcast it (a shuffle join would put each file in one task)
    return df.join(F.broadcast(files), "source").withColumn(
        "node", F.shiftleft(F.col("_file").cast("bigint"), ROW_BITS).bitwiseOR(F.col("source_row"))).drop("_file")


def score_pairs(pairs, sh, verify: bool, num_perm: int, broadcast: bool = False):
    """``(src, dst)`` pairs of nodes -> ``(src, dst, sim)``; ``sh`` is a ``(node, sh)`` table."""
    from pyspark.sql import functions as F

    a = sh.select(F.col("node").alias("src"), F.col("sh").alias("a"))
    b = sh.select(F.col("node").alias("dst"), F.col("sh").alias("b"))
    if broadcast:
        a, b = F.broadcast(a), F.broadcast(b)
    joined = pairs.join(a, "src").join(b, "dst").select("src", "dst", "a", "b")
    return joined.mapInArrow(_scorer(verify, num_perm), _SCORED_DDL)


def find_near_duplicates(df, cfg: Config, keep_edges: bool = False) -> NearResult:
    """Rows of ``df`` (DEDUP columns) that are near duplicates of another row; see module doc.

    Runs Spark jobs (signatures, candidates, components) eagerly; the returned ``removed``
    DataFrame is checkpointed and the intermediate tables are released.  ``keep_edges`` also
    returns the verified pairs (node ids; for evaluation).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from selectllm.dedup.components import connected_components
    from selectllm.text.minhash import bands_rows

    near = cfg.dedup.near
    t0 = time.perf_counter()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:  # seconds per phase, for the metrics
        phases[name] = round(time.perf_counter() - t0 - sum(phases.values()), 3)

    mem = StorageLevel.MEMORY_AND_DISK
    bands, rows = bands_rows(near.threshold, near.num_perm, near.bands)
    spark = df.sparkSession
    n_parts = max(spark.sparkContext.defaultParallelism,
                  int(spark.conf.get("spark.sql.shuffle.partitions", "8")))

    src = _with_nodes(df.select("id", "instruction", "input", "source", "source_row"))
    if src.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:  # keep every core busy
        src = src.repartition(n_parts, "node")
    docs = (src
            .mapInArrow(_signer(near.ngram, near.shingle, near.num_perm, bands, rows, near.verify), _DOCS_DDL)
            .persist(mem))
    persisted = [docs]
    try:
        d = docs.agg(F.count(F.lit(1)).alias("rows"),
                     F.sum(F.when(F.size("bands") == 0, 1).otherwise(0)).alias("no_shingles"),
                     F.sum(F.length("sh")).alias("sh_bytes"),
                     F.max("source_row").alias("max_row"),
                     F.max(F.shiftright("node", ROW_BITS)).alias("max_file")).first()
        if d["rows"] and (d["max_row"] >= 1 << ROW_BITS or d["max_file"] >= 1 << FILE_BITS):
            raise UserError(f"dedup.near: at most 2^{FILE_BITS} files and 2^{ROW_BITS} rows per file")
        lap("signatures")

        # buckets: band keys shared by 2+ rows (one aggregation), joined back to their rows.
        # The centre of a giant bucket's star is the member with the smallest xxhash64(node,
        # band): the bands of one group of rows get different centres (deterministic).
        bk = docs.select("node", F.posexplode("bands").alias("band", "key"))
        sizes = (bk.groupBy("band", "key").agg(F.count(F.lit(1)).alias("size"),
                                               F.min_by("node", F.xxhash64("node", "band")).alias("head"))
                 .where(F.col("size") >= 2).persist(mem))
        persisted.append(sizes)
        g = sizes.agg(F.count(F.lit(1)).alias("buckets"), F.sum("size").alias("members"),
                      F.sum(F.when(F.col("size") > near.max_bucket, 1).otherwise(0)).alias("giant"),
                      F.sum(F.when(F.col("size") > near.max_bucket, F.col("size")).otherwise(0)).alias("giant_rows")
                      ).first()
        giant = {"buckets": g["giant"], "rows": g["giant_rows"]}
        # usually few buckets are shared: broadcast them instead of shuffling every band key
        shared = F.broadcast(sizes) if g["buckets"] * 48 <= BROADCAST_BYTES else sizes
        multi = bk.join(shared, ["band", "key"])
        lap("buckets")

        # the rows of the shared buckets, with their shingles (broadcast when small enough)
        need = multi.select("node").distinct()
        row_bytes = (d["sh_bytes"] or 0) / max(d["rows"], 1) + 96
        small_side = (g["members"] or 0) * row_bytes <= BROADCAST_BYTES
        sub = docs.join(F.broadcast(need) if small_side else need, "node").select(
            "node", "id", "source", "source_row", "sh").persist(mem)
        persisted.append(sub)
        n_need = sub.count()
        lap("candidates")

        # verification -> edges of the similarity graph.  Buckets up to max_bucket rows: every
        # pair, checked inside the bucket (each member's set is shipped once per bucket); giant
        # buckets: the pairs (centre, member) only, checked by joining both rows.
        star = (multi.where((F.col("size") > near.max_bucket) & (F.col("node") != F.col("head")))
                .select(F.least("head", "node").alias("src"), F.greatest("head", "node").alias("dst")))
        if VERIFY_IN_BUCKETS:
            sh = sub.select("node", "sh")
            members = multi.where(F.col("size") <= near.max_bucket).select("band", "key", "node").join(
                F.broadcast(sh) if small_side else sh, "node")
            in_buckets = (members.groupBy("band", "key").agg(F.collect_list(F.struct("node", "sh")).alias("m"))
                          .select("m").mapInArrow(_bucket_scorer(near.verify, near.num_perm, near.threshold),
                                                  _SCORED_DDL))
            in_stars = score_pairs(star.distinct(), sub, near.verify, near.num_perm, small_side).where(
                F.col("sim") >= near.threshold)
        else:  # every distinct pair, checked by joining both rows
            small = multi.where(F.col("size") <= near.max_bucket).select("band", "key", "node")
            pairs = (small.alias("x").join(small.alias("y"), ["band", "key"])
                     .where(F.col("x.node") < F.col("y.node"))
                     .select(F.col("x.node").alias("src"), F.col("y.node").alias("dst")))
            cands = pairs.unionByName(star).distinct()
            all_scored = score_pairs(cands, sub, near.verify, near.num_perm, small_side).persist(mem)
            persisted.append(all_scored)
            in_buckets = all_scored.groupBy().agg(F.lit(-1).cast("bigint").alias("src"),
                                                  F.count(F.lit(1)).alias("dst"), F.lit(-1.0).alias("sim"))
            in_stars = all_scored.where(F.col("sim") >= near.threshold)
        checked = in_buckets.unionByName(in_stars).persist(mem)
        persisted.append(checked)
        in_bucket_checks = checked.agg(F.sum(F.when(F.col("src") < 0, F.col("dst"))).alias("n")).first()["n"]
        scored = (checked.where(F.col("src") >= 0).groupBy("src", "dst").agg(F.max("sim").alias("sim"))
                  .persist(mem))  # a pair seen in several bands, once
        persisted.append(scored)
        n_edges = scored.count()
        checks = (in_bucket_checks or 0) + ((g["giant_rows"] or 0) - (g["giant"] or 0) if VERIFY_IN_BUCKETS else 0)
        edges = scored.select("src", "dst")
        lap("verified")

        kept_edges = cut_lineage(scored) if keep_edges else None
        cc_stats: dict = {}
        comp = connected_components(edges, stats=cc_stats, simple=True)  # src < dst, no repeats
        lap("components")

        # one keeper per component (its smallest node); similarity of each other row to it
        dup = comp.where(F.col("node") != F.col("component")).select(
            F.col("node").alias("src"), F.col("component").alias("dst"))
        sims = score_pairs(dup, sub, near.verify, near.num_perm, small_side)
        info = sub.select(F.col("node").alias("src"), "id", "source", "source_row")
        keeper = sub.select(F.col("node").alias("dst"), F.col("id").alias("duplicate_of"))
        if small_side:
            info, keeper = F.broadcast(info), F.broadcast(keeper)
        removed = cut_lineage(sims.join(info, "src").join(keeper, "dst").select(
            "id", "duplicate_of", F.col("sim").cast("float").alias("similarity"), "source", "source_row"),
            eager=False)  # materialized by the count below
        r = removed.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("duplicate_of").alias("keepers")).first()
        n_removed, n_comps = int(r["n"]), int(r["keepers"])  # one keeper per component
        lap("keepers")
    finally:
        for p in persisted:
            p.unpersist()
    metrics = {
        "bands": bands,
        "rows_per_band": rows,
        "rows": int(d["rows"]),
        "rows_without_shingles": int(d["no_shingles"] or 0),
        "giant_buckets": int(giant["buckets"] or 0),
        "giant_bucket_rows": int(giant["rows"] or 0),
        "rows_in_candidates": int(n_need),
        "broadcast": small_side,
        "pair_checks": int(checks),
        "verified_pairs": int(n_edges),
        "components": n_comps,
        "removed": n_removed,
        "cc_rounds": cc_stats.get("rounds", 0),
        "seconds": round(time.perf_counter() - t0, 3),
        "phase_seconds": phases,
    }
    return NearResult(removed=removed, metrics=metrics, edges=kept_edges)
