"""The ``embed`` stage: Ray Data reads ``dedup/``, an actor pool encodes, Parquet out.

The backend (torch, onnx, static; ``auto`` resolved against the cluster's GPUs) and its actors,
threads and batch size come from embed/backends.py; onnx and static build their cached model on
the driver first, so a bad model fails there with one line.

Resume works by id: finished output files accumulate in ``_work/embed-<key>/`` (outside the
staging folder, so a killed run keeps them).  A rerun drops any file that a kill left unreadable,
skips the ids already embedded and encodes only the rest; the stage then commits all work files
as ``embed/part-*.parquet``.  A row is in exactly one readable work file, so nothing is duplicated.
"""

from __future__ import annotations

import os
import posixpath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from selectllm.embed.backends import EmbedActor, Plan, plan, prepare
from selectllm.embed.embedder import resolve_model
from selectllm.engines import ray_init
from selectllm.contract import Output, Resources, Settings, Stage, StageContext


SORT_WINDOW = 64  # rows handed to an actor at once = SORT_WINDOW model batches, sorted by length


def _num_rows(fs, path: str) -> int:
    with fs.open(path, "rb") as f:
        return pq.read_metadata(f).num_rows


def finished_ids(fs, folder: str) -> pa.Array:
    """Ids in the readable work files; files a kill left half-written are removed."""
    ids = []
    if not fs.exists(folder):
        return pa.array([], pa.string())
    for path in sorted(fs.find(folder)):
        if not path.endswith(".parquet"):
            fs.rm(path)
            continue
        try:
            with fs.open(path, "rb") as f:
                ids.append(pq.read_table(f, columns=["id"]).column("id"))
        except Exception:  # truncated footer: the write was killed
            fs.rm(path)
    if not ids:
        return pa.array([], pa.string())
    return pa.concat_arrays([c.combine_chunks() for c in ids])


def _drop_done(batch: pa.Table, done: pa.Array) -> pa.Table:
    if len(done) == 0:
        return batch
    return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=done)))


def actor_plan(cfg) -> Plan:
    """The backend, actors, GPUs per actor, threads and batch size on the running Ray cluster."""
    import ray

    res = ray.cluster_resources()
    return plan(cfg, int(res.get("CPU", 1)), int(res.get("GPU", 0)))


def resolved_backend(cfg) -> str:
    return actor_plan(cfg).backend


def run_stage(ctx: StageContext) -> dict:
    import ray

    cfg = ctx.cfg
    model = resolve_model(cfg.embed.model)  # fail fast, on the driver, with one line
    ray_init(cfg)
    p = actor_plan(cfg)
    key, _ = prepare(cfg, p.backend, model)  # export / distill once, on the driver
    fs = ctx.run.fs
    # files of a killed attempt are resumed, not embedded again; the resolved backend is part of
    # the folder, so an `auto` run resumed on another kind of cluster never mixes two backends' vectors
    work = posixpath.join(ctx.work, p.backend)
    fs.makedirs(work, exist_ok=True)
    done = finished_ids(fs, work)

    parts = ctx.input("rows").files()
    ds = ray.data.read_parquet([ctx.run.staging_uri(p) for p in parts], columns=["id", "text"])
    total = sum(_num_rows(fs, p) for p in parts)  # from the footers: no pass over the data
    todo = total - len(done)
    if todo > 0:
        ds = ds.map_batches(_drop_done, fn_args=[done], batch_format="pyarrow")
        # one output file per block: small enough that a kill loses little, large enough to stay few
        window = p.batch_size * SORT_WINDOW
        rows_per_file = int(min(max(-(-todo // (p.actors * 8)), window), 50_000))
        ds = ds.repartition(target_num_rows_per_block=rows_per_file)
        ds = ds.map_batches(
            EmbedActor,
            fn_constructor_kwargs=dict(
                backend=p.backend, model=model, dtype=cfg.embed.dtype,
                delay_s=float(os.environ.get("SELECTLLM_EMBED_TEST_DELAY_S", "0") or 0),
                max_seq_length=cfg.embed.max_seq_length, device=p.device, batch_size=p.batch_size,
                threads=p.threads, precision=cfg.embed.gpu_precision, key=key, onnx_int8=cfg.embed.onnx_int8,
                static_dims=cfg.embed.static_dims, cache_dir=cfg.embed.cache_dir),
            batch_size=window,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=p.actors),
            num_gpus=p.gpus or None,
            num_cpus=1 if not p.gpus else None,
        )
        ds.write_parquet(ctx.run.staging_uri(work) if "://" in ctx.run.url else work)

    # commit: every work file becomes embed/part-NNNNN.parquet
    files = sorted(p for p in fs.find(work) if p.endswith(".parquet"))
    rows = 0
    dim = 0
    for i, path in enumerate(files):
        meta = pq.read_metadata(fs.open(path, "rb"))
        rows += meta.num_rows
        fs.mv(path, posixpath.join(ctx.out, f"part-{i:05d}.parquet"))
    if files:
        schema = pq.read_schema(fs.open(posixpath.join(ctx.out, "part-00000.parquet"), "rb"))
        dim = schema.field("embedding").type.list_size
    if rows != total:
        raise RuntimeError(f"embed: {rows} vectors for {total} rows; rerun to embed the missing ones")
    fs.rm(work, recursive=True)
    return {"rows": rows, "resumed_rows": len(done), "dim": dim, "device": p.device, "backend": p.backend,
            "actors": p.actors, "threads": p.threads, "batch_size": p.batch_size, "files": len(files)}


def _vectors_check(schema: pa.Schema) -> str | None:
    """``embedding``: fixed_size_list<float32 or float16>[d], d the model's dimension."""
    i = schema.get_field_index("embedding")
    t = schema.field(i).type if i >= 0 else None
    if t is None or not pa.types.is_fixed_size_list(t) or t.value_type not in (pa.float32(), pa.float16()):
        return f"column 'embedding' must be fixed_size_list<float32|float16>, not {t}"
    return None


STAGE = Stage(
    name="embed",
    run=run_stage,
    inputs={"rows": "dedup.rows"},
    outputs=(Output("vectors", "", schema=pa.schema([("id", pa.string())]), check=_vectors_check),),
    # the backend and its precision knobs change the vectors; speed knobs and the cache folder do not
    settings=Settings(("embed",), exclude={"embed": {"batch_size", "actors", "gpus_per_actor", "threads", "cache_dir"}}),
    resources=Resources(engine="ray", cpus_per_worker=1, gpus_per_worker="embed.gpus_per_actor"),
    doc="Ray Data: embed every kept row (GPU when present).",
)
