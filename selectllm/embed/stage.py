"""The ``embed`` stage: a pool of Ray actors embeds the input's units, Parquet out.

The backend (torch, onnx, static; ``auto`` resolved against the cluster's GPUs) and its actors,
threads and batch size come from embed/backends.py; onnx and static build their cached model on
the driver first, so a bad model fails there with one line.

Resume works by unit (embed/units.py): the input parts are cut into row ranges planned from the
input alone; each actor reads a unit's rows itself, encodes them and writes the unit's file into
``_work/embed-<key>/<backend>/`` (outside the staging folder, so a killed run keeps it).  A rerun
lists that folder once and embeds only the units without a complete file; no task is sent the
ids already embedded.  The stage then moves the unit files, in input order, to
``embed/part-NNNNN.parquet`` (renames on a local disk, concurrent copies on object stores).
"""

from __future__ import annotations

import posixpath
import time

import pyarrow as pa
import pyarrow.parquet as pq

from selectllm.embed.backends import EmbedWorker, Plan, plan, prepare
from selectllm.embed.embedder import resolve_model
from selectllm.embed.units import footers, plan_units, split_done
from selectllm.engines import ray_init
from selectllm.contract import Output, Resources, Settings, Stage, StageContext


SORT_WINDOW = 64  # rows an actor encodes at once = SORT_WINDOW model batches, sorted by length
IN_FLIGHT = 2  # units queued per actor: the next one starts the moment the current one is written
PROGRESS_SECONDS = 10.0  # at most one progress line this often


def embed_workers(cfg, cluster: dict) -> dict:
    """The embed stage's ``Resources.workers``: the backend, actors, CPUs and GPUs per actor,
    threads and batch size on a cluster of these resources (``backends.plan``)."""
    p = plan(cfg, int(cluster.get("CPU", 1)), int(cluster.get("GPU", 0)))
    return {"workers": p.actors, "cpus_per_worker": 1 if not p.gpus else None, "gpus_per_worker": p.gpus,
            "backend": p.backend, "threads": p.threads, "batch_size": p.batch_size, "device": p.device,
            "plan": p}


class Progress:
    """"embed: 120,000/1,000,000 rows, 3,400 rows/s" at most every ``every`` seconds (and at the end).

    The rate counts this attempt's rows over this attempt's time (actor start-up included).
    """

    def __init__(self, total: int, resumed: int, log, every: float = PROGRESS_SECONDS):
        self.total, self.done, self.new, self.log, self.every = total, resumed, 0, log, every
        self.t0 = self.last = time.perf_counter()

    def add(self, rows: int) -> None:
        self.done += rows
        self.new += rows
        now = time.perf_counter()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            self.log.print(self.line())

    def line(self) -> str:
        rate = self.new / max(time.perf_counter() - self.t0, 1e-9)
        return f"embed: {self.done:,}/{self.total:,} rows, {rate:,.0f} rows/s"


def run_units(ctx: StageContext, sized: dict, model: str, key: str | None, work: str, todo: list,
              progress: Progress) -> None:
    """Embed ``todo`` on the pool ``sized`` says (``embed_workers``), ``IN_FLIGHT`` units queued on each actor."""
    import ray

    cfg, p = ctx.cfg, sized["plan"]
    worker = ray.remote(EmbedWorker).options(
        num_cpus=sized["cpus_per_worker"], num_gpus=sized["gpus_per_worker"] or None, max_restarts=2,
        max_task_retries=2)
    kwargs = dict(backend=p.backend, model=model, dtype=cfg.embed.dtype,
                  max_seq_length=cfg.embed.max_seq_length, device=p.device, batch_size=p.batch_size,
                  threads=p.threads, precision=cfg.embed.gpu_precision, key=key, onnx_int8=cfg.embed.onnx_int8,
                  static_dims=cfg.embed.static_dims, cache_dir=cfg.embed.cache_dir)
    actors = [worker.remote(ctx.run.url, work, p.batch_size * SORT_WINDOW, **kwargs)
              for _ in range(min(sized["workers"], len(todo)))]
    queue = list(reversed(todo))  # popped from the end: input order
    pending: dict = {}  # ObjectRef -> actor
    try:
        for actor in actors:
            for _ in range(IN_FLIGHT):
                if queue:
                    pending[actor.embed.remote(queue.pop())] = actor
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                actor = pending.pop(ref)
                progress.add(ray.get(ref))  # a worker's error is raised here, on the driver
                if queue:
                    pending[actor.embed.remote(queue.pop())] = actor
    finally:
        for actor in actors:
            ray.kill(actor)


def run_stage(ctx: StageContext) -> dict:
    cfg = ctx.cfg
    model = resolve_model(cfg.embed.model)  # fail fast, on the driver, with one line
    ray_init(cfg)
    sized = ctx.workers()
    p: Plan = sized["plan"]
    key, _ = prepare(cfg, p.backend, model)  # export / distill once, on the driver
    fs = ctx.run.fs
    # units of a killed attempt are resumed, not embedded again; the resolved backend is part of
    # the folder, so an `auto` run resumed on another kind of cluster never mixes two backends' vectors
    work = posixpath.join(ctx.work, p.backend)
    fs.makedirs(work, exist_ok=True)

    parts = ctx.input("rows").files()
    metas = footers(fs, parts)  # row counts from the footers: no pass over the data
    unreadable = [path for path, m in zip(parts, metas) if m is None]
    if unreadable:
        raise RuntimeError(f"embed: input file {unreadable[0]} has no Parquet footer; rerun dedup with --force dedup")
    units = plan_units(parts, [[m.row_group(g).num_rows for g in range(m.num_row_groups)] for m in metas])
    total = sum(u.rows for u in units)
    done, todo = split_done(fs, work, units)
    progress = Progress(total, sum(u.rows for u in done), ctx.log)
    if todo:
        run_units(ctx, sized, model, key, work, todo, progress)

    # commit: the unit files, in input order, become embed/part-NNNNN.parquet
    present = {posixpath.basename(f) for f in fs.find(work)}
    missing = [u.name for u in units if u.name not in present]
    if missing:
        raise RuntimeError(f"embed: {len(missing)} of {len(units)} units have no output (first: {missing[0]}); "
                           "rerun to embed them")
    ctx.run.move_files([posixpath.join(work, u.name) for u in units],
                       [posixpath.join(ctx.out, f"part-{i:05d}.parquet") for i in range(len(units))])
    dim = 0
    if units:
        with fs.open(posixpath.join(ctx.out, "part-00000.parquet"), "rb") as f:
            dim = pq.read_schema(f).field("embedding").type.list_size
    try:
        fs.rm(work, recursive=True)
    except FileNotFoundError:  # on object storage a folder is gone with its last file (moved above)
        pass
    return {"rows": total, "resumed_rows": sum(u.rows for u in done), "dim": dim, "device": p.device,
            "backend": p.backend, "actors": p.actors, "threads": p.threads, "batch_size": p.batch_size,
            "files": len(units)}


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
    resources=Resources(engine="ray", workers=embed_workers),
    doc="Ray actor pool: embed every kept row, unit by unit (GPU when present).",
)
