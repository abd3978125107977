"""Near-duplicate removal as a Spark plan: banded MinHash LSH, verification, connected components.

:func:`find_near_duplicates` takes rows with the DEDUP columns (the exact-deduplicated rows of
the ``dedup`` stage) and returns the rows to remove, each pointing at the row it keeps.  The
maths are in :mod:`selectllm.text.minhash`; this module only moves data to them.  It runs as
five named phases - ``signatures`` (steps 1-2), ``buckets`` (3), ``verified`` (4), ``components``
(5), ``keepers`` (6) - one function each (``_sign_phase`` ...), each ending with its table kept
by a :class:`~selectllm.dedup.phases.PhaseStore` and a few counted figures: in the stage's work
folder, a failed attempt's finished phases are read back by the rerun, and a phase that runs out
of memory says so in one line (:func:`~selectllm.dedup.phases.phase`).  No join side is
broadcast unless its counted rows fit the JVM heap (:mod:`selectllm.dedup.budget`); every
decision is in the metrics (``broadcast``).

1. **Node ids.**  Every row gets ``node = file_rank << 40 | source_row`` where ``file_rank`` is
   the rank of its ``source`` among the distinct sources (string order).  So node order is
   ``(source, source_row)`` order, the same order as exact dedup's keeper rule, and ids do not
   depend on partitioning.  (Limits: < 2^23 files, < 2^40 rows per file; checked.)
2. **Signatures** (``mapInArrow``, numpy over whole Arrow batches): shingle sets of
   :func:`~selectllm.text.minhash.shingle_text` (the id's normal form of the source
   instruction + input: NFKC, case, punctuation and spacing never matter), MinHash
   signatures and ``bands`` band keys per row.  The table ``(node, id, source, source_row,
   bands, sh)`` is persisted; ``bands`` holds the row's int64 band keys and ``sh`` its uint32
   shingle hashes (or, when ``verify`` is off, its signature), both as raw bytes (cheap in
   Spark).  Rows without shingles (empty after normalization) get no band: they are never near
   duplicates.
3. **Buckets**: the band keys are sent to partition ``key mod parts`` as *packed* rows - one
   binary row per map batch and destination (:mod:`selectllm.dedup.route`), not one Spark row
   per key - and each partition is sorted in numpy
   (:func:`selectllm.dedup.buckets.shared_buckets`), giving the members of every bucket with 2+
   rows (keys are salted by band, so a key names one band's bucket).  A *giant* bucket (more
   than ``max_bucket`` rows, e.g. a boilerplate preamble shared by thousands of rows) gives only
   the pairs ``(centre, other)`` - linear, never quadratic - and is counted in the metrics; its
   centre is a fixed pseudo-random member, different in every band, so a member unlike one
   centre still meets others.
4. **Verification**: the members of each ordinary bucket are gathered with their shingle sets
   (hash-partitioned by key, sorted per task in numpy) and verified in pivot rounds
   (:func:`selectllm.dedup.buckets.bucket_edges`): the components are those of checking every
   pair, with ``m - 1`` checks for a bucket of ``m`` near-identical rows instead of
   ``m(m-1)/2``.  A check is the true Jaccard of the two shingle sets (``verify: true``, the
   default) or the MinHash estimate (``verify: false``); pairs at or above ``threshold`` are
   the edges of the similarity graph.  Each task also reduces its edges to the stars of their
   components (:func:`selectllm.dedup.components.local_stars`): those are what the component
   search gets.  Star pairs of giant buckets are checked by joining both rows.
   ``pair_checks`` in the metrics counts the comparisons made, ``verified_pairs`` the distinct
   edges.
5. **Connected components** of that graph in Spark
   (:func:`selectllm.dedup.components.connected_components`): component = smallest node.  The
   rounds only merge components across tasks.
6. **Keeper** of a component: its smallest node, i.e. the member with the smallest
   ``(source, source_row)`` - the same rule as exact dedup, independent of partitioning.  Every
   other member is removed with ``duplicate_of`` = the keeper's id and ``similarity`` = the
   Jaccard (true, or estimated when ``verify`` is off) **between that row and the keeper**:
   the rows of the components are hash-partitioned by component and sorted, so each component
   arrives keeper first and is scored in one streaming pass.  Through a chain A~B~C, C can be
   removed for A with a similarity below the threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import pyarrow as pa

from selectllm.config import Config, NearDedupConfig
from selectllm.dedup.budget import BroadcastBudget, bounded_broadcasts, unsafe_row_bytes
from selectllm.dedup.components import cut_lineage
from selectllm.dedup.phases import PhaseStore
from selectllm.errors import UserError

ROW_BITS = 40  # node = file_rank << ROW_BITS | source_row
FILE_BITS = 63 - ROW_BITS
BATCH_CHARS = 4 << 20  # characters normalized and shingled per numpy pass inside one Arrow batch
KEYS_PER_PARTITION = 1 << 22  # band keys sorted per task when finding shared buckets (~64 MB)
SETS_PER_TASK = 64 << 20  # bytes of shingle sets (+ SET_ROW_BYTES per member) one verification task holds
SET_ROW_BYTES = 64  # per bucket member besides its set: key, node, offsets
SIM_VALUES = 1 << 22  # shingle hashes (both sides) compared per numpy pass in verification (~100 MB)

_DOCS_DDL = ("node bigint, id string, source string, source_row bigint, "
             "bands binary, sh binary")
_SCORED_DDL = "src bigint, dst bigint, sim double"
_MEMBERS_DDL = "key bigint, node bigint, size bigint, centre bigint, sh_len bigint"
_GRAPH_DDL = "kind tinyint, src bigint, dst bigint, sim double"
_REMOVED_DDL = ("id string, duplicate_of string, similarity float, source string, source_row bigint, "
                "keeper_source string")
HISTORY_SOURCE = "\x00history"  # rows of earlier runs (a programme's history): sort before every file, so they keep
EDGE, LINK, CHECKS = 0, 1, 2  # rows of the verification output: verified pair, component link, check count


@dataclass
class NearResult:
    """``removed``: ``(id, duplicate_of, similarity float, source, source_row, keeper_source)``,
    checkpointed (``keeper_source``: the source of the row it is a copy of)."""

    removed: object
    metrics: dict = field(default_factory=dict)
    edges: object = None  # (src, dst, sim) of the similarity graph, when asked for (checkpointed)
    signed: object = None  # the docs of df's own rows (node, id, source, source_row, bands, sh), when asked for


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
                band_bytes = np.concatenate(([0], np.cumsum(np.where(has, bands * 8, 0))))
                band_list = _binary(band_bytes, keys[has].ravel().view(np.uint8))  # int64 keys, packed
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


def _unpack(col, dtype=np.uint32) -> tuple[np.ndarray, np.ndarray]:
    """(offsets in values, from 0; flat values) of a binary column made by :func:`_binary`."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    size = np.dtype(dtype).itemsize
    _, off_buf, data_buf = col.buffers()
    width = np.int64 if pa.types.is_large_binary(col.type) else np.int32
    off = np.frombuffer(off_buf, dtype=width)[col.offset:col.offset + len(col) + 1].astype(np.int64)
    if data_buf is None or not len(col):
        return off - off[0], np.zeros(0, dtype)
    data = np.frombuffer(data_buf, dtype=np.uint8)[off[0]:off[-1]]
    return (off - off[0]) // size, data.view(dtype)


def _similarity(verify: bool, num_perm: int):
    """``sim(a, b)`` of two equally long lists of sets, each ``(offsets, values)`` as in ``sh``:
    the true Jaccard of the shingle sets, or (``verify`` off) the MinHash estimate."""
    from selectllm.text.minhash import estimate_jaccard, jaccard_sets

    if verify:
        return lambda a, b: jaccard_sets(*a, *b)
    return lambda a, b: estimate_jaccard(a[1].reshape(-1, num_perm), b[1].reshape(-1, num_perm))


def _scorer(verify: bool, num_perm: int):
    """mapInArrow function: (src, dst, a, b) -> (src, dst, sim) with the similarity of a and b."""

    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sim = _similarity(verify, num_perm)
        for batch in batches:
            s = sim(_unpack(batch.column("a")), _unpack(batch.column("b")))
            yield pa.RecordBatch.from_arrays([batch.column("src"), batch.column("dst"), pa.array(s)],
                                             names=["src", "dst", "sim"])

    return score


def _keeper_scorer(verify: bool, num_perm: int):
    """mapInArrow function over ``(component, node, id, source, source_row, sh)`` sorted by
    ``(component, node)`` in the partition, so each component starts with its keeper (its
    smallest node): every other row -> ``(id, duplicate_of, similarity, source, source_row)``
    with the similarity to the keeper (and the keeper's source).  Streams: only the last keeper
    is kept across batches."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        sim = _similarity(verify, num_perm)
        carry = None  # (component, id, set, source) of the last keeper seen
        for batch in batches:
            comp, node = batch.column("component").to_numpy(), batch.column("node").to_numpy()
            ids = batch.column("id")
            off, val = _unpack(batch.column("sh"))
            keeper = comp == node
            # each row's keeper: the last keeper row at or before it; -1: the carried one
            k = np.maximum.accumulate(np.where(keeper, np.arange(len(comp)), -1))
            if carry is not None:  # sets of the carried keeper and of the batch, carried one first
                off = np.concatenate(([0], carry[2][0][1:], carry[2][0][-1] + off[1:]))
                val = np.concatenate((carry[2][1], val))
            shift = int(carry is not None)
            take = np.flatnonzero(~keeper)
            if take.size and k[take[0]] < 0 and (carry is None or carry[0] != comp[take[0]]):
                raise RuntimeError("keeper rows out of order")  # the plan sorts: cannot happen
            kk = k[take] + shift  # index of the keeper's set, and of its id in keeper_ids
            s = sim(_gather(off, val, take + shift), _gather(off, val, kk))
            sources = batch.column("source")
            keeper_ids, keeper_sources = ids, sources
            if carry is not None:
                keeper_ids = pa.concat_arrays([pa.array([carry[1]], ids.type), ids])
                keeper_sources = pa.concat_arrays([pa.array([carry[3]], sources.type), sources])
            rows = pa.array(take)
            yield pa.RecordBatch.from_arrays(
                [ids.take(rows), keeper_ids.take(pa.array(kk)), pa.array(s.astype(np.float32)),
                 sources.take(rows), batch.column("source_row").take(rows), keeper_sources.take(pa.array(kk))],
                names=["id", "duplicate_of", "similarity", "source", "source_row", "keeper_source"])
            if keeper.any():
                last = int(np.flatnonzero(keeper)[-1])
                carry = (comp[last], ids[last].as_py(), _gather(off, val, np.array([last + shift])),
                         sources[last].as_py())

    return run


def _gather(offsets: np.ndarray, values: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sets number ``idx`` (as ``(offsets, values)``) out of ``(offsets, values)``."""
    lens = offsets[idx + 1] - offsets[idx]
    new = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    pos = np.repeat(offsets[idx] - new[:-1], lens) + np.arange(new[-1], dtype=np.int64)
    return new, values[pos]


def _chunked_similarity(sim, offsets: np.ndarray, values: np.ndarray, max_values: int = SIM_VALUES):
    """``f(i, j)``: ``sim`` of the sets number ``i[k]`` and ``j[k]`` of ``(offsets, values)``, in
    passes of at most ``max_values`` set values (both sides; one longer pair is a pass of its
    own), so a verification task's working memory does not grow with its pairs: a pivot round
    compares every member of the task's buckets at once."""

    def run(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if not i.size:
            return np.zeros(0)
        ends = np.cumsum((offsets[i + 1] - offsets[i]) + (offsets[j + 1] - offsets[j]))
        out, a = [], 0
        while a < i.size:  # the longest run from a within max_values (at least one pair)
            b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + max_values, side="right")))
            out.append(sim(_gather(offsets, values, i[a:b]), _gather(offsets, values, j[a:b])))
            a = b
        return np.concatenate(out)

    return run


def _whole_partition(batches: Iterator[pa.RecordBatch]) -> pa.Table | None:
    """All the Arrow batches of a ``mapInArrow`` partition as one table (None when empty)."""
    batches = list(batches)
    return pa.Table.from_batches(batches) if batches else None


def _key_router(parts: int):
    """mapInArrow function over docs ``(node, bands, sh_len)``: per Arrow batch, one row per
    destination partition ``(route, keys, nodes, lens)`` with the band keys that go there, their
    nodes and the byte lengths of those rows' sets, packed (a key goes to partition
    ``key mod parts``; see :mod:`selectllm.dedup.route`)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.dedup.route import route_values, split_by_destination

        route = route_values(parts)
        for batch in batches:
            off, keys = _unpack(batch.column("bands"), np.int64)
            per_row = np.diff(off)
            nodes = np.repeat(batch.column("node").to_numpy(), per_row)
            lens = np.repeat(batch.column("sh_len").to_numpy().astype(np.int64), per_row)
            out = list(split_by_destination(keys.view(np.uint64) % np.uint64(parts), parts, keys, nodes, lens))
            if out:
                yield pa.RecordBatch.from_arrays(
                    [pa.array([route[t] for t, _ in out], pa.int64())]
                    + [pa.array([cols[c].tobytes() for _, cols in out], pa.binary()) for c in range(3)],
                    names=["route", "keys", "nodes", "lens"])

    return run


def _bucketer():
    """mapInArrow function over one partition of packed band keys ``(route, keys, nodes, lens)``:
    the members of its shared buckets ``(key, node, size, centre, sh_len)`` (the partition is
    sorted at once; ``sh_len``: the bytes of the member's set, which verification will move)."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.dedup.buckets import shared_buckets

        t = _whole_partition(batches)
        if t is None:
            return
        nodes = _unpack(t.column("nodes"), np.int64)[1]
        lens = _unpack(t.column("lens"), np.int64)[1]
        k, n, size, centre = shared_buckets(_unpack(t.column("keys"), np.int64)[1], nodes)
        order = np.argsort(nodes, kind="stable")  # a node's length, looked up by node
        sh_len = lens[order][np.searchsorted(nodes[order], n)] if n.size else n
        yield pa.RecordBatch.from_arrays([pa.array(k), pa.array(n), pa.array(size), pa.array(centre),
                                          pa.array(sh_len)], names=["key", "node", "size", "centre", "sh_len"])

    return run


def _bucket_verifier(verify: bool, num_perm: int, threshold: float):
    """mapInArrow function over one hash partition of bucket members ``(key, node, sh)``: rows
    ``(kind, src, dst, sim)`` of three kinds - :data:`EDGE`, the verified edges of
    :func:`~selectllm.dedup.buckets.bucket_edges`; :data:`LINK`, the components of those edges
    as stars ``(smallest node, node)`` (:func:`~selectllm.dedup.components.local_stars`); one
    :data:`CHECKS` row ``(-1, checks)`` counting the pairs checked.  The partition is sorted by
    (key, node) at once, so members of a bucket are consecutive and in node order."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from selectllm.dedup.buckets import bucket_edges
        from selectllm.dedup.components import local_stars

        t = _whole_partition(batches)
        if t is None:
            return
        key, node = t.column("key").to_numpy(), t.column("node").to_numpy()
        order = np.lexsort((node, key))
        key, node = key[order], node[order]
        off, val = _gather(*_unpack(t.column("sh")), order)
        bounds = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1], [True])))
        i, j, sims, checks = bucket_edges(bounds, _chunked_similarity(_similarity(verify, num_perm), off, val),
                                          threshold)
        a, b = np.minimum(node[i], node[j]), np.maximum(node[i], node[j])
        root, leaf = local_stars(a, b)
        kind = np.repeat(np.array([EDGE, LINK, CHECKS], np.int8), [a.size, root.size, 1])
        yield pa.RecordBatch.from_arrays(
            [pa.array(kind), pa.array(np.concatenate((a, root, [-1]))),
             pa.array(np.concatenate((b, leaf, [checks]))),
             pa.array(np.concatenate((sims, np.full(root.size, np.nan), [np.nan])))],
            names=["kind", "src", "dst", "sim"])

    return run


# ----------------------------------------------------------------------------- the plan
_DOCS = pa.schema([("node", pa.int64()), ("id", pa.string()), ("source", pa.string()), ("source_row", pa.int64()),
                   ("bands", pa.binary()), ("sh", pa.binary())])
_MEMBERS = pa.schema([("key", pa.int64()), ("node", pa.int64()), ("size", pa.int64()), ("centre", pa.int64()),
                      ("sh_len", pa.int64())])
_GRAPH = pa.schema([("kind", pa.int8()), ("src", pa.int64()), ("dst", pa.int64()), ("sim", pa.float64()),
                    ("n", pa.int64())])
_COMPONENTS = pa.schema([("node", pa.int64()), ("component", pa.int64())])
_REMOVED = pa.schema([("id", pa.string()), ("duplicate_of", pa.string()), ("similarity", pa.float32()),
                      ("source", pa.string()), ("source_row", pa.int64()), ("keeper_source", pa.string())])
SIGNED = pa.schema([("id", pa.string()), ("bands", pa.binary()), ("sh", pa.binary())])  # a history's rows
LONG_ROW = unsafe_row_bytes(2)  # a (bigint, bigint) row: bucket members, pairs, components


@dataclass
class _Plan:
    """What the phases share: the settings, the task counts, where tables go, the join budget."""

    near: NearDedupConfig
    bands: int
    rows_per_band: int
    n_parts: int
    store: PhaseStore
    budget: BroadcastBudget
    history: object = None  # earlier rows, signed with these settings (SIGNED columns), or None
    keep_signed: bool = False  # the caller wants df's own docs (NearResult.signed)


def _with_nodes(df, budget: BroadcastBudget, first_rank: int = 0):
    """df + ``node`` (bigint): (``first_rank`` + file rank among distinct sources) << ROW_BITS | source_row.

    The files (one row each) are counted first and broadcast when they fit ``budget`` (a shuffle
    join would put each file in one task)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    files = df.select("source").distinct()
    files = cut_lineage(files.withColumn("_file", F.row_number().over(Window.orderBy("source")) - 1 + first_rank))
    row = files.agg(F.count(F.lit(1)).alias("n"), F.max(F.length("source")).alias("chars")).first()
    side = budget.side("files", files, int(row["n"]), unsafe_row_bytes(2, 4 * (row["chars"] or 0)))
    return df.join(side, "source").withColumn(
        "node", F.shiftleft(F.col("_file").cast("bigint"), ROW_BITS).bitwiseOR(F.col("source_row"))).drop("_file")


def score_pairs(pairs, sh, verify: bool, num_perm: int, broadcast_pairs: bool = False):
    """``(src, dst)`` pairs of nodes -> ``(src, dst, sim)``; ``sh`` is a ``(node, sh)`` table.

    Each end's set is fetched by its own join, then the two halves are joined on the pair (so the
    sets never travel to the driver).  ``broadcast_pairs``: the pairs (two bigints each) are
    broadcast to the scans of ``sh`` instead of shuffling ``sh``.
    """
    from pyspark.sql import functions as F

    p = F.broadcast(pairs) if broadcast_pairs else pairs
    a = sh.select(F.col("node").alias("src"), F.col("sh").alias("a")).join(p, "src")
    b = sh.select(F.col("node").alias("dst"), F.col("sh").alias("b")).join(p, "dst")
    joined = a.join(b, ["src", "dst"]).select("src", "dst", "a", "b")
    return joined.mapInArrow(_scorer(verify, num_perm), _SCORED_DDL)


def _key_lister(with_id: bool):
    """mapInArrow function over ``(bands[, id])``: one row per band key ``(key[, id])``."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            off, keys = _unpack(batch.column("bands"), np.int64)
            cols, names = [pa.array(keys)], ["key"]
            if with_id:
                cols.append(batch.column("id").take(pa.array(np.repeat(np.arange(batch.num_rows), np.diff(off)))))
                names.append("id")
            yield pa.RecordBatch.from_arrays(cols, names=names)

    return run


def _history_candidates(docs, history):
    """The rows of ``history`` (SIGNED: earlier runs' rows, signed with these settings) that share
    a band key with a row of ``docs``: the only ones that can be near copies (LSH candidates).
    Joins on the keys (never a set on the driver); the candidates become docs rows of source
    :data:`HISTORY_SOURCE` with nodes ``0 .. n-1`` in id order (file rank 0: they keep)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    mine = docs.select("bands").mapInArrow(_key_lister(False), "key bigint").distinct()
    theirs = history.select("bands", "id").mapInArrow(_key_lister(True), "key bigint, id string")
    ids = theirs.join(mine, "key", "left_semi").select("id").distinct()
    cand = history.join(ids, "id", "left_semi").dropDuplicates(["id"])
    return cand.withColumn("source_row", F.row_number().over(Window.orderBy("id")) - 1).select(
        F.col("source_row").alias("node"), "id", F.lit(HISTORY_SOURCE).alias("source"), "source_row", "bands", "sh")


def _sign_phase(df, plan: _Plan):
    """Phase ``signatures``: the docs table ``(node, id, source, source_row, bands, sh)``: df's rows
    signed, and (with a history) the earlier rows that share a band key with them."""
    from pyspark.sql import functions as F

    near, spark = plan.near, df.sparkSession
    cores = spark.sparkContext.defaultParallelism
    src = _with_nodes(df.select("id", "instruction", "input", "source", "source_row"), plan.budget,
                      first_rank=1 if plan.history is not None else 0)
    # Signing is the costliest pass and runs one Python task per partition: with few input
    # partitions (a file of one big row group gives one busy task whatever the split count)
    # the rows are spread over every core first
    if src.rdd.getNumPartitions() < 2 * cores:
        src = src.repartition(max(plan.n_parts, 2 * cores), "node")
    signer = _signer(near.ngram, near.shingle, near.num_perm, plan.bands, plan.rows_per_band, near.verify)
    signed = src.mapInArrow(signer, _DOCS_DDL)
    cached = None
    if plan.history is not None:  # df's rows, then the earlier rows found with their band keys
        from selectllm.engines import cache_level

        cached = signed.persist(cache_level())  # signed once: read for its keys and for the docs
        signed = cached.unionByName(_history_candidates(cached, plan.history))
    try:
        docs = plan.store.keep("signatures", signed, _DOCS, release=not plan.keep_signed)
        row = docs.agg(F.count(F.lit(1)).alias("rows"),
                       F.sum(F.when(F.length("bands") == 0, 1).otherwise(0)).alias("no_shingles"),
                       F.sum(F.length("sh")).alias("sh_bytes"),
                       F.max("source_row").alias("max_row"),
                       F.max(F.shiftright("node", ROW_BITS)).alias("max_file"),
                       F.sum(F.when(F.col("source") == HISTORY_SOURCE, 1).otherwise(0)).alias("earlier")).first()
    finally:
        if cached is not None:  # docs is materialized now (written, or persisted and counted)
            cached.unpersist()
    if row["rows"] and (row["max_row"] >= 1 << ROW_BITS or row["max_file"] >= 1 << FILE_BITS):
        raise UserError(f"dedup.near: at most 2^{FILE_BITS} files and 2^{ROW_BITS} rows per file")
    return docs, {"rows": int(row["rows"] or 0), "no_shingles": int(row["no_shingles"] or 0),
                  "sh_bytes": int(row["sh_bytes"] or 0), "history_candidates": int(row["earlier"] or 0)}


def _bucket_phase(docs, signed: dict, plan: _Plan):
    """Phase ``buckets``: the members of shared buckets ``(key, node, size, centre)``.  The
    ``(key, node)`` rows are packed per destination partition (one binary row per map batch and
    partition), shuffled and sorted per partition in numpy, ~``KEYS_PER_PARTITION`` per task."""
    from pyspark.sql import functions as F

    near = plan.near
    parts = max(plan.n_parts, -(-signed["rows"] * plan.bands // KEYS_PER_PARTITION))
    routed = docs.select("node", "bands", F.length("sh").alias("sh_len"))
    members = plan.store.keep("buckets", routed
                              .mapInArrow(_key_router(parts), "route bigint, keys binary, nodes binary, lens binary")
                              .repartition(parts, "route")
                              .mapInArrow(_bucketer(), _MEMBERS_DDL), _MEMBERS)
    giant = F.col("size") > near.max_bucket
    row = members.agg(F.count(F.lit(1)).alias("members"),
                    F.sum(F.when(giant, 1.0 / F.col("size")).otherwise(0)).alias("giant_buckets"),
                    F.sum(F.when(giant, 1).otherwise(0)).alias("giant_rows"),
                    F.sum(F.when(~giant, F.col("size") - 1).otherwise(0) / 2).alias("pairs_in_buckets"),
                    F.sum(F.when(~giant, F.col("sh_len") + SET_ROW_BYTES).otherwise(0)).alias("set_bytes"),
                    F.max("size").alias("largest")).first()
    return members, {"members": int(row["members"] or 0), "giant_buckets": round(row["giant_buckets"] or 0),
                     "giant_rows": int(row["giant_rows"] or 0), "pairs_in_buckets": int(row["pairs_in_buckets"] or 0),
                     "largest_bucket": int(row["largest"] or 0), "set_bytes": int(row["set_bytes"] or 0)}


def _verify_phase(docs, members, signed: dict, bucketed: dict, plan: _Plan):
    """Phase ``verified``: the graph ``(kind, src, dst, sim, n)`` - verified edges, component links
    and the check counts.  Ordinary buckets: members gathered with their sets (~64 MB of sets per
    task, from the members' set bytes the buckets phase counted), pivot rounds (m - 1 checks for m near-identical rows); giant buckets: the star pairs
    (centre, member), checked by joining both rows."""
    from pyspark.sql import functions as F

    near, budget = plan.near, plan.budget
    sh = docs.select("node", "sh")
    ordinary = members.where(F.col("size") <= near.max_bucket).select("key", "node")
    n_ordinary = bucketed["members"] - bucketed["giant_rows"]
    with_sets = sh.join(budget.side("bucket_members", ordinary, n_ordinary, LONG_ROW), "node")
    # ~SETS_PER_TASK of sets per task, counted member by member (long rows weigh what they weigh)
    set_parts = int(max(plan.n_parts, -(-bucketed["set_bytes"] // SETS_PER_TASK)))
    checked = (with_sets.select("key", "node", "sh").repartition(set_parts, "key")
               .mapInArrow(_bucket_verifier(near.verify, near.num_perm, near.threshold), _GRAPH_DDL))
    if bucketed["giant_rows"]:  # verified pairs of giant buckets are edges and links at once
        star = (members.where((F.col("size") > near.max_bucket) & (F.col("node") != F.col("centre")))
                .select(F.least("centre", "node").alias("src"), F.greatest("centre", "node").alias("dst"))
                .distinct())
        n_star = bucketed["giant_rows"] - bucketed["giant_buckets"]  # at most: one pair per member but the centre
        budget.side("star_pairs", star, n_star, LONG_ROW)
        in_stars = score_pairs(star, sh, near.verify, near.num_perm,
                               broadcast_pairs=budget.joins["star_pairs"]["broadcast"]
                               ).where(F.col("sim") >= near.threshold)
        checked = checked.unionByName(in_stars.withColumn("kind", F.lit(EDGE).cast("tinyint"))).unionByName(
            in_stars.withColumn("kind", F.lit(LINK).cast("tinyint")))
    # a pair of several bands once; the check counts ride along with the edges (one job)
    graph = plan.store.keep("verified", checked.groupBy("kind", "src", "dst").agg(
        F.max("sim").alias("sim"), F.count(F.lit(1)).alias("n")), _GRAPH, release=False)
    row = graph.agg(F.sum(F.when(F.col("kind") == CHECKS, F.col("dst") * F.col("n"))).alias("checks"),
                  F.sum(F.when(F.col("kind") == EDGE, 1).otherwise(0)).alias("edges")).first()
    checks = int(row["checks"] or 0) + max(bucketed["giant_rows"] - bucketed["giant_buckets"], 0)
    return graph, {"checks": checks, "edges": int(row["edges"] or 0), "set_parts": set_parts}


def _components_phase(graph, verified: dict, plan: _Plan):
    """Phase ``components``: ``(node, component)`` of the links (component = smallest node)."""
    from selectllm.dedup.components import connected_components

    stats: dict = {}
    links = graph.where(graph.kind == LINK).select("src", "dst")  # src < dst, no repeats
    comp = connected_components(links, stats=stats, simple=True,
                                check_first=verified["set_parts"] < 2)  # stars of several tasks: merge at once
    comp = plan.store.keep("components", comp, _COMPONENTS)
    return comp, {"nodes": comp.count(), "rounds": stats.get("rounds", 0)}


def _keepers_phase(docs, comp, components: dict, plan: _Plan):
    """Phase ``keepers``: one keeper per component (its smallest node) and the similarity of every
    other row to it - the rows of the components, grouped by component with the keeper first,
    scored in one streaming pass."""
    from pyspark.sql import functions as F

    near = plan.near
    in_components = docs.join(plan.budget.side("components", comp, components["nodes"], LONG_ROW), "node")
    removed = plan.store.keep(
        "keepers", in_components.select("component", "node", "id", "source", "source_row", "sh")
        .repartition(plan.n_parts, "component").sortWithinPartitions("component", "node")
        .mapInArrow(_keeper_scorer(near.verify, near.num_perm), _REMOVED_DDL), _REMOVED, release=False)
    row = removed.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("duplicate_of").alias("keepers")).first()
    return removed, {"removed": int(row["n"]), "components": int(row["keepers"])}  # one keeper per component


def find_near_duplicates(df, cfg: Config, keep_edges: bool = False, work_uri: str | None = None,
                         broadcast_budget: int | None = None, history=None, keep_signed: bool = False) -> NearResult:
    """Rows of ``df`` (DEDUP columns) that are near duplicates of another row; see module doc.

    Runs the five phases (signatures, buckets, verified, components, keepers) as Spark jobs,
    eagerly.  ``work_uri``: a folder where each finished phase is kept (Parquet and its figures,
    :class:`~selectllm.dedup.phases.PhaseStore`), so a rerun after a failure resumes from the
    first unfinished phase; without it the tables are persisted for this call and released (the
    returned ``removed`` is checkpointed).  ``broadcast_budget``: bytes a broadcast relation may
    take in the JVM (default: from the heap; :mod:`selectllm.dedup.budget`).  ``keep_edges``
    also returns the verified pairs (node ids; for evaluation).

    ``history``: rows of earlier runs already signed with these settings (:data:`SIGNED`: id,
    bands, sh - what ``signed`` gave them): those sharing a band key with a row of ``df`` join the
    graph as rows of source :data:`HISTORY_SOURCE` that always keep (a row of ``df`` in their
    component is removed with ``keeper_source`` = that source).  Rows of ``df`` whose ``source``
    is :data:`HISTORY_SOURCE` are earlier rows given as text: they keep too (smallest file rank).
    ``keep_signed``: ``NearResult.signed`` holds df's own docs, kept for the caller.
    """
    from selectllm.text.minhash import bands_rows

    near = cfg.dedup.near
    spark = df.sparkSession
    t0 = time.perf_counter()
    bands, rows = bands_rows(near.threshold, near.num_perm, near.bands)
    plan = _Plan(near=near, bands=bands, rows_per_band=rows,
                 n_parts=max(spark.sparkContext.defaultParallelism,
                             int(spark.conf.get("spark.sql.shuffle.partitions", "8"))),
                 store=PhaseStore(spark, work_uri), budget=BroadcastBudget.of(spark, broadcast_budget),
                 history=history, keep_signed=keep_signed)
    seconds: dict[str, float] = {}

    def timed(name: str, compute):
        t = time.perf_counter()
        out = plan.store.run(name, _PHASE_SCHEMAS[name], compute)
        seconds[name] = round(time.perf_counter() - t, 3)
        return out

    try:
        with bounded_broadcasts(spark, plan.budget) as aqe_threshold:
            docs, signed = timed("signatures", lambda: _sign_phase(df, plan))
            members, bucketed = timed("buckets", lambda: _bucket_phase(docs, signed, plan))
            graph, verified = timed("verified", lambda: _verify_phase(docs, members, signed, bucketed, plan))
            comp, components = timed("components", lambda: _components_phase(graph, verified, plan))
            removed, kept = timed("keepers", lambda: _keepers_phase(docs, comp, components, plan))
    finally:
        plan.store.release()
    metrics = {
        "bands": bands,
        "rows_per_band": rows,
        "rows": signed["rows"],
        "rows_without_shingles": signed["no_shingles"],
        "history_candidates": signed.get("history_candidates", 0),
        "giant_buckets": bucketed["giant_buckets"],
        "giant_bucket_rows": bucketed["giant_rows"],
        "largest_bucket": bucketed["largest_bucket"],
        "rows_in_buckets": bucketed["members"],
        "pairs_in_buckets": bucketed["pairs_in_buckets"],
        "pair_checks": verified["checks"],
        "verified_pairs": verified["edges"],
        "components": kept["components"],
        "removed": kept["removed"],
        "cc_rounds": components["rounds"],
        "seconds": round(time.perf_counter() - t0, 3),
        "phase_seconds": seconds,
        "resumed_phases": list(plan.store.resumed),
        "broadcast": {**plan.budget.metrics(), "aqe_threshold_bytes": aqe_threshold},
    }
    edges = graph.where(graph.kind == EDGE).select("src", "dst", "sim") if keep_edges else None
    own = docs.where(docs.source != HISTORY_SOURCE) if keep_signed else None
    return NearResult(removed=removed, metrics=metrics, edges=edges, signed=own)


_PHASE_SCHEMAS = {"signatures": _DOCS, "buckets": _MEMBERS, "verified": _GRAPH, "components": _COMPONENTS,
                  "keepers": _REMOVED}
