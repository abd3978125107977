"""The ``cluster`` stage: k-center centers over all embeddings, every row assigned to its nearest.

k comes from ``cluster.k`` or, when auto, from the selection budget: one cluster per LLM prompt
(``ceil(budget / picks_per_prompt)``) for ``selectllm``; ``budget`` clusters for strategies that
take one row per cluster (``kcenter``, ``kmeans-closest``).

The pool is split into ``cluster.shards`` Ray actors that read their own part of ``embed/`` and
run exact farthest-first rounds with the driver as coordinator (:mod:`selectllm.cluster.sharded`);
the centers do not depend on the number of shards.  Every shard writes its own rows of
``assignments.parquet/`` (a folder of id-sorted part files, read as one table by
:func:`selectllm.tables.read_table`); only the k centers pass through the driver.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.config import Config
from selectllm.errors import UserError
from selectllm.contract import Output, Resources, Settings, Stage
from selectllm.schemas import ASSIGNMENTS, CENTERS
from selectllm.select.registry import ONE_PER_CLUSTER

ROW_STATE_BYTES = 128  # a shard's bytes per row besides its vector: id, distances, labels, load order, output ids


def resolved_k(cfg: Config) -> int:
    if cfg.cluster.k != "auto":
        return int(cfg.cluster.k)
    s = cfg.select
    if s.strategy in ONE_PER_CLUSTER:
        return s.budget
    return max(1, math.ceil(s.budget / s.picks_per_prompt))


def initial_center_ids(cfg: Config) -> list[str]:
    """``cluster.initial_centers``: a list of ids, or a file (local or URL) with one id per line."""
    spec = cfg.cluster.initial_centers
    if not spec:
        return []
    if isinstance(spec, str):
        import fsspec

        try:
            with fsspec.open(spec, "r") as f:
                return [line.strip() for line in f if line.strip()]
        except (OSError, ValueError) as e:
            raise UserError(f"cluster.initial_centers: cannot read {spec}: {e}") from None
    return [str(v) for v in spec]


def initial_centers_digest(cfg: Config) -> tuple:
    """The content of a ``cluster.initial_centers`` file (its ids) for the settings hash: editing
    the file reruns the stage (a list in the config is hashed with the section already)."""
    if not isinstance(cfg.cluster.initial_centers, str):
        return ()
    import hashlib

    return (hashlib.sha256("\n".join(initial_center_ids(cfg)).encode()).hexdigest()[:16],)


def prior_centers(ctx, dim: int) -> tuple[np.ndarray, dict]:
    """The vectors of every earlier selection of the programme (``history``): farthest-first
    starts from them, so this run covers what they leave uncovered.  Not rows of this pool.
    With them, how the annotated rows imported into the history steer (:meth:`History.annotated`)."""
    if not ctx.cfg.history.path:
        return np.zeros((0, dim), np.float32), {}
    from selectllm.history import run_view

    h, _, view = run_view(ctx.cfg, ctx.run)
    annotated = h.annotated(view)
    if annotated["annotated_not_steering"]:
        ctx.log.print(f"cluster: {annotated['annotated_not_steering']:,} of {annotated['annotated']:,} annotated rows "
                      "imported into the history have no vector (never selected by a run of the programme): "
                      "not steering clusters")
    return h.prior_vectors(view, dim), annotated


def _missing_message(missing: list[str]) -> str:
    return f"cluster.initial_centers: id {missing[0]} is not in the embedded pool ({len(missing)} missing)"


def resolve_shards(cfg: Config, n: int, device: str, row_bytes: int, cluster: dict) -> int:
    """``cluster.shards``: a number, or auto = the cluster's CPUs (GPUs with device cuda), never so
    many that a shard has fewer than ``cluster.min_shard_rows`` rows, and on CPU at least enough
    that no shard holds more than ``cluster.max_shard_mb`` of rows (``row_bytes`` each: vector and
    id), so a shard process's memory does not grow with the pool (more shards than CPUs share
    them)."""
    if cfg.cluster.shards != "auto":
        return max(1, min(int(cfg.cluster.shards), n))
    slots = int(cluster.get("GPU", 0)) if device != "cpu" else int(cluster.get("CPU", 1))
    min_rows = int(cfg.cluster.min_shard_rows)
    shards = max(1, min(slots, math.ceil(n / max(1, min_rows))))
    if device == "cpu" and row_bytes:
        shards = max(shards, min(n, math.ceil(n * row_bytes / (float(cfg.cluster.max_shard_mb) * (1 << 20)))))
    return shards


def shard_row_bytes(fs, path: str, dtype: str) -> int:
    """Bytes a shard holds per row: the vector in ``dtype`` + the id and the per-row state
    (:data:`ROW_STATE_BYTES`); from the ``embedding`` column's width in ``path``'s schema."""
    with fs.open(path, "rb") as f:
        typ = pq.read_schema(f).field("embedding").type
    dims = getattr(typ, "list_size", 0) or 0
    return dims * (4 if dtype == "float32" else 2) + ROW_STATE_BYTES


def resolve_device(cfg: Config, cluster: dict) -> str:
    """``cluster.device``: cpu, cuda, or auto (cuda when the Ray cluster has GPUs)."""
    device = str(cfg.cluster.device)
    if device != "auto":
        return device
    return "cuda" if cluster.get("GPU", 0) >= 1 else "cpu"


def shard_workers(cfg: Config, cluster: dict, rows: int, row_bytes: int) -> dict:
    """The cluster stage's ``Resources.workers``: the shards (``resolve_shards``), the CPUs of the
    cluster shared among them (at most one each), one GPU each on CUDA."""
    device = resolve_device(cfg, cluster)
    shards = resolve_shards(cfg, rows, device, row_bytes, cluster)
    return {"workers": shards, "cpus_per_worker": min(1.0, cluster.get("CPU", 1) / shards),
            "gpus_per_worker": 1 if device != "cpu" else 0, "device": device}


def run_stage(ctx) -> dict:
    from selectllm.cluster.sharded import (
        MissingIds,
        ShardGroup,
        covered_counts,
        keys_to_arrow,
        plan_pieces,
        run_kcenter,
        write_assignments,
    )
    from selectllm.engines import ray_init

    cfg = ctx.cfg
    files = ctx.input("vectors").files()
    fs = ctx.run.fs
    n = 0
    for path in files:
        with fs.open(path, "rb") as f:
            n += pq.read_metadata(f).num_rows
    if n == 0:
        raise UserError("cluster: the embedded pool is empty (every input row was quarantined or a duplicate)")
    ray_init(cfg)
    dtype = str(cfg.cluster.dtype)
    mode = str(cfg.cluster.mode)
    sized = ctx.workers(rows=n, row_bytes=shard_row_bytes(fs, files[0], dtype))
    device = sized["device"]
    k = min(resolved_k(cfg), n)
    with fs.open(files[0], "rb") as f:
        dim = pq.read_schema(f).field("embedding").type.list_size
    prior, annotated = prior_centers(ctx, dim)
    if len(prior):
        ctx.log.print(f"cluster: farthest-first starts from {len(prior):,} earlier selections (history)")
    group = ShardGroup.start([("parquet", fs, p) for p in plan_pieces(fs, files, sized["workers"])], dtype=dtype,
                             device=device, num_cpus=sized["cpus_per_worker"], num_gpus=sized["gpus_per_worker"])
    try:
        try:
            result = run_kcenter(group, k, initial=initial_center_ids(cfg) or None, prior=prior, mode=mode,
                                 batch=int(cfg.cluster.batch),
                                 coreset_factor=float(cfg.cluster.coreset_factor), log=ctx.log.print)
        except MissingIds as e:
            raise UserError(_missing_message(e.missing)) from None
        k = len(result.keys)
        # rows already as close to an earlier selection as this run's centers and the earlier
        # selections bring every row (the covering radius): select's quotas discount them
        covered, covering_radius = covered_counts(group, prior, k)
        written = write_assignments(group, fs, ctx.out_path("assignments.parquet"))
        if written != n:
            raise RuntimeError(f"cluster: {written} assignment rows written for {n} embedded rows")
    finally:
        group.close()
    table_centers = pa.table({"cluster_id": np.arange(k, dtype=np.int64), "id": keys_to_arrow(result.keys),
                              "size": result.sizes.astype(np.int64), "radius": result.radii.astype(np.float32),
                              "covered": covered}, schema=pa.schema(list(CENTERS) + [("covered", pa.int64())]))
    with fs.open(ctx.out_path("centers.parquet"), "wb") as f:
        pq.write_table(table_centers, f)
    st = result.stats
    return {"rows": int(n), "k": int(k), "radius": float(result.radii.max()),
            "size_min": int(result.sizes.min()), "size_max": int(result.sizes.max()),
            "shards": int(st["shards"]), "nodes": int(st["nodes"]), "mode": mode, "device": device,
            "prior_centers": int(len(prior)), "covered_rows": int(covered.sum()),
            "covering_radius": round(covering_radius, 6), "rounds": int(st.get("rounds", 1)), "select_seconds": round(st["select_seconds"], 3),
            "assign_seconds": round(st["assign_seconds"], 3), **annotated}


STAGE = Stage(
    name="cluster",
    run=run_stage,
    inputs={"vectors": "embed.vectors"},
    outputs=(
        Output("assignments", "assignments.parquet", schema=ASSIGNMENTS),
        Output("centers", "centers.parquet", schema=CENTERS),
    ),
    # shards, batch, min/max shard sizes and device change the speed, never the centers
    settings=Settings(("cluster",), exclude={"cluster": {"shards", "batch", "min_shard_rows", "max_shard_mb",
                                                         "device"}},
                      extra=lambda cfg: (resolved_k(cfg), *initial_centers_digest(cfg)), version="first-center-edge"),
    resources=Resources(engine="ray", workers=shard_workers),
    reads_history=True,
    doc="k-center clusters and nearest-center assignment.",
)
