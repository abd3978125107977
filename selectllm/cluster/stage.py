"""The ``cluster`` stage: k-center centers over all embeddings, every row assigned to its nearest.

k comes from ``cluster.k`` or, when auto, from the selection budget: one cluster per LLM prompt
(``ceil(budget / picks_per_prompt)``) for ``selectllm``; ``budget`` clusters for strategies that
take one row per cluster (``kcenter``, ``kmeans-closest``).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.cluster.kcenter import assign, farthest_first
from selectllm.config import Config
from selectllm.errors import UserError
from selectllm.schemas import ASSIGNMENTS, CENTERS
from selectllm.tables import load_embeddings


def resolved_k(cfg: Config) -> int:
    if cfg.cluster.k != "auto":
        return int(cfg.cluster.k)
    s = cfg.select
    if s.strategy in ("kcenter", "kmeans-closest"):
        return s.budget
    return max(1, math.ceil(s.budget / s.picks_per_prompt))


def initial_center_rows(cfg: Config, ids: np.ndarray) -> list[int]:
    """Rows of ``cluster.initial_centers`` (ids, or a file with one id per line)."""
    spec = cfg.cluster.initial_centers
    if not spec:
        return []
    if isinstance(spec, str):
        import fsspec

        with fsspec.open(spec, "r") as f:
            wanted = [line.strip() for line in f if line.strip()]
    else:
        wanted = list(spec)
    pos = {v: i for i, v in enumerate(ids)}
    missing = [w for w in wanted if w not in pos]
    if missing:
        raise UserError(f"cluster.initial_centers: id {missing[0]} is not in the embedded pool ({len(missing)} missing)")
    return [pos[w] for w in wanted]


def cluster_sizes_radii(labels: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.bincount(labels, minlength=k)
    radii = np.zeros(k, dtype=np.float32)
    np.maximum.at(radii, labels, dist)
    return sizes, radii


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    if cfg.cluster.method != "kcenter":
        raise UserError(f"cluster.method '{cfg.cluster.method}' is not available yet; use kcenter")
    ids, x = load_embeddings(ctx.run)
    if len(ids) == 0:
        raise UserError("cluster: the embedded pool is empty (every input row was quarantined or a duplicate)")
    k = min(resolved_k(cfg), len(ids))
    centers, _ = farthest_first(x, k, initial=initial_center_rows(cfg, ids))
    labels, dist = assign(x, centers)
    sizes, radii = cluster_sizes_radii(labels, dist, k)
    is_center = np.zeros(len(ids), dtype=bool)
    is_center[centers] = True
    assignments = pa.table({"id": pa.array(ids, pa.string()), "cluster_id": labels, "distance": dist,
                            "is_center": is_center}, schema=ASSIGNMENTS)
    table_centers = pa.table({"cluster_id": np.arange(k, dtype=np.int64), "id": pa.array(ids[centers], pa.string()),
                              "size": sizes.astype(np.int64), "radius": radii}, schema=CENTERS)
    fs = ctx.run.fs
    with fs.open(ctx.out_path("assignments.parquet"), "wb") as f:
        pq.write_table(assignments, f)
    with fs.open(ctx.out_path("centers.parquet"), "wb") as f:
        pq.write_table(table_centers, f)
    return {"rows": int(len(ids)), "k": int(k), "radius": float(radii.max()),
            "size_min": int(sizes.min()), "size_max": int(sizes.max())}
