"""What the selection strategies read, through the select stage's declared inputs
(``rows`` = dedup's kept rows, ``assignments`` / ``centers`` = the cluster stage's, ``vectors`` =
the embeddings).  ``ctx`` is any stage context that declares those names (select, compare)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def lookup_rows(rows, ids: list[str], columns: list[str]) -> dict[str, dict]:
    """The dedup rows of some ids (``rows``: the ``rows`` input), streamed with a filter: the pool
    never lands on the driver."""
    table = rows.read(columns=["id", *columns], filter=pc.field("id").isin(pa.array(ids, pa.string())))
    return {row["id"]: row for row in table.to_pylist()}


def assignments(ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids sorted, cluster_id, distance) of every pool row."""
    a = ctx.input("assignments").read().sort_by("id")
    return (np.asarray(a.column("id").to_pylist(), dtype=object), a.column("cluster_id").to_numpy(),
            a.column("distance").to_numpy())


def centers(ctx) -> pa.Table:
    return ctx.input("centers").read().sort_by("cluster_id")


def load_embeddings(vectors) -> tuple[np.ndarray, np.ndarray]:
    """(ids, X): every embedded row sorted by id, X float32 (n, d) L2-normalized."""
    from selectllm.embed.embedder import from_fixed_size_list

    table = vectors.read(columns=["id", "embedding"]).sort_by("id")
    ids = np.asarray(table.column("id").to_pylist(), dtype=object)
    return ids, from_fixed_size_list(table.column("embedding"))


def pool_embeddings(ctx, ids: np.ndarray) -> np.ndarray:
    """The embeddings of ``ids`` (sorted), row for row.  ``selectllm compare`` loads them once and
    hands them over as ``ctx.embeddings = (ids, X)``."""
    cached = getattr(ctx, "embeddings", None)
    if cached is None:
        cached = load_embeddings(ctx.input("vectors"))
        ctx.embeddings = cached
    all_ids, x = cached
    if len(all_ids) != len(ids) or not np.array_equal(np.asarray(all_ids, dtype=object), np.asarray(ids, dtype=object)):
        raise RuntimeError("select: the embedded rows and the cluster assignments differ; rerun `selectllm cluster`")
    return x


def row_lengths(ctx, ids) -> np.ndarray:
    """Characters of instruction + input for every id (aligned with ``ids``)."""
    cached = getattr(ctx, "row_lengths", None)
    if cached is not None and len(cached) == len(ids):
        return cached
    t = ctx.input("rows").read(columns=["id", "instruction", "input"])
    n_chars = pc.add(pc.utf8_length(pc.fill_null(t.column("instruction"), "")),
                     pc.utf8_length(pc.fill_null(t.column("input"), "")))
    by_id = dict(zip(t.column("id").to_pylist(), n_chars.to_numpy(zero_copy_only=False).tolist()))
    out = np.asarray([by_id.get(str(i), 0) for i in ids], dtype=np.int64)
    ctx.row_lengths = out
    return out
