"""Which backend runs, with how many actors, threads and rows per batch, and the actor that runs it.

``embed.backend: auto`` picks torch when the Ray cluster has GPUs (fp16 on the GPU beats any CPU
path) and onnx on CPU-only clusters: int8 onnxruntime, one single-threaded actor per core,
measured 3.2-4.1x torch end to end on 2 cores with a mean cosine of 0.993 to torch's vectors
(README, benchmarks/bench_embed.py).  static is never picked by
itself: its vectors live in another space (about 40% of each row's 10 nearest neighbours agree
with MiniLM's), a trade a user makes knowingly for runs too large for any transformer on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from selectllm.errors import UserError

# model batch sizes (README): onnx runs one row at a time because dynamic int8 quantization scales
# activations per tensor, so in a batch a row's vector would depend on its neighbours and padding;
# alone, each vector is a function of its row (resume and reruns agree) at ~20% of the speed of
# batch 16 measured on 2 cores.  static encodes a whole window with one sparse product; GPUs want
# large batches.
AUTO_BATCH = {("torch", "cpu"): 64, ("torch", "cuda"): 512, ("onnx", "cpu"): 1, ("static", "cpu"): 1024}


@dataclass(frozen=True)
class Plan:
    backend: str  # torch | onnx | static, never auto
    actors: int
    gpus: float  # per actor
    threads: int  # intra-op threads per CPU actor
    batch_size: int
    device: str  # cpu | cuda


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(cfg, gpus_total: int) -> str:
    backend = cfg.embed.backend
    if backend == "auto":
        wants_gpu = cfg.embed.gpus_per_actor == "auto" or float(cfg.embed.gpus_per_actor) > 0
        if gpus_total and wants_gpu:
            return "torch"
        return "onnx" if _has_onnxruntime() else "torch"
    if backend == "onnx" and not _has_onnxruntime():
        raise UserError("embed.backend onnx needs onnxruntime and onnx: pip install onnxruntime onnx")
    return backend


def plan(cfg, cpus_total: int, gpus_total: int) -> Plan:
    """Actors, GPUs per actor, threads and batch size for the resolved backend on this cluster."""
    backend = resolve_backend(cfg, gpus_total)
    cpus_total = max(1, cpus_total)
    gpus = cfg.embed.gpus_per_actor
    if gpus == "auto":
        gpus = 1.0 if (gpus_total and backend == "torch") else 0.0
    gpus = float(gpus) if backend == "torch" else 0.0  # onnx (CPU build) and static run on CPUs
    if cfg.embed.actors != "auto":
        actors = int(cfg.embed.actors)
    elif gpus:
        actors = max(1, int(gpus_total / gpus))
    elif backend == "torch":
        # torch on CPU: fewer, fatter actors (one per 4 cores, intra-op threads = the cores they
        # get) keep the model's memory (~0.5 GB per process) low
        actors = max(1, cpus_total // 4)
    else:
        # onnx and static: one single-threaded actor per core.  Each actor reads and writes its own
        # units, so no core is left idle for Parquet; and at batch 1 onnxruntime's second intra-op
        # thread costs more than it brings (measured: 115 rows per CPU-second on one thread, 55 on two)
        actors = cpus_total
    if cfg.embed.threads != "auto":
        threads = int(cfg.embed.threads)
    else:
        threads = 1 if (gpus or backend != "torch") else max(1, cpus_total // actors)
    device = "cuda" if gpus else "cpu"
    batch = cfg.embed.batch_size
    if batch == "auto":
        batch = AUTO_BATCH[(backend, device)]
    return Plan(backend, actors, gpus, threads, int(batch), device)


def prepare(cfg, backend: str, model: str) -> tuple[str | None, str | None]:
    """Build the backend's cached artifact on the driver (once; one-line errors here, not in actors).

    Returns (key, folder): actors on this machine find the folder; on other machines they build
    the same key from the same model files (see cache.py; safe when several do it at once).
    """
    try:
        if backend == "onnx":
            from selectllm.embed import onnx_backend

            key = onnx_backend.artifact_key(model, cfg.embed.onnx_int8)
            return key, str(onnx_backend.ensure_export(model, cfg.embed.onnx_int8, cfg.embed.cache_dir, key))
        if backend == "static":
            from selectllm.embed import static_backend

            key = static_backend.artifact_key(model, cfg.embed.static_dims)
            return key, str(static_backend.ensure_distilled(model, cfg.embed.static_dims, cfg.embed.cache_dir, key))
    except UserError:
        raise
    except Exception as e:  # a folder sentence-transformers cannot load, a failed export, a full disk
        first = (str(e).strip().splitlines() or [""])[0][:300]
        verb = "export" if backend == "onnx" else "distill"
        raise UserError(f"embed.backend {backend}: could not {verb} {model}: {type(e).__name__}: {first}") from None
    return None, None


def make_encoder(backend: str, model: str, *, max_seq_length: int, device: str, batch_size: int, threads: int,
                 precision: str = "float16", key: str | None = None, onnx_int8: bool = True,
                 static_dims: int = 256, cache_dir: str | None = None):
    """An object with ``encode(texts) -> (n, d) float32, L2-normalized`` and ``dim``."""
    if backend == "torch":
        from selectllm.embed.embedder import Embedder

        return Embedder(model, max_seq_length, device, "float32", batch_size, cpu_threads=threads, precision=precision)
    if backend == "onnx":
        from selectllm.embed.onnx_backend import OnnxEncoder, ensure_export

        folder = ensure_export(model, onnx_int8, cache_dir, key)
        return OnnxEncoder(folder, threads, batch_size, max_seq_length)
    if backend == "static":
        from selectllm.embed.static_backend import StaticEncoder, ensure_distilled

        folder = ensure_distilled(model, static_dims, cache_dir, key)
        return StaticEncoder(folder, max_seq_length)
    raise UserError(f"unknown embed backend {backend!r}")


class EmbedWorker:
    """A Ray actor: one encoder, loaded once; embeds whole units (read, encode, write; units.py).

    ``window``: rows read and encoded at once (``batch_size`` x SORT_WINDOW model batches, sorted
    by length inside the encoder).
    """

    def __init__(self, run_url: str, work: str, window: int, backend: str, model: str, dtype: str, **kwargs):
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import fsspec

        from selectllm.rundir import is_url, storage_options

        self.fs = fsspec.core.url_to_fs(run_url, **storage_options(run_url))[0]
        self.rename = not is_url(run_url)  # object stores publish a whole object at once instead
        self.work, self.window, self.dtype = work, window, dtype
        self.encoder = make_encoder(backend, model, **kwargs)

    def encode(self, batch: pa.RecordBatch) -> pa.Table:
        from selectllm.embed.embedder import to_fixed_size_list

        emb = self.encoder.encode(batch.column("text").to_pylist())
        return pa.table({"id": batch.column("id"), "embedding": to_fixed_size_list(np.asarray(emb), self.dtype)})

    def embed(self, unit) -> int:
        from selectllm.embed.units import read_unit, write_unit

        return write_unit(self.fs, self.work, unit, read_unit(self.fs, unit, self.window), self.encode, self.rename)
