"""Embed stage throughput vs bare ``SentenceTransformer.encode`` on the same rows, same process.

    python benchmarks/bench_embed.py [--rows 4000] [--batch-size 64]

Prints one JSON object: rows/s of both, their ratio (the stage includes Ray start-up of the actor
pool, model load, Parquet read and write), device, and GPU memory when a GPU is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from _data import load_records

    from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT, load_config
    from selectllm.embed.embedder import Embedder, resolve_model
    from selectllm.pipeline import StageContext
    from selectllm.rundir import RunDir
    from selectllm.schemas import DEDUP
    from selectllm.text.normalize import content_id, render_text

    recs = load_records(args.rows)
    texts = [render_text(r["instruction"], r["input"], PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) for r in recs]
    ids = [f"{i:08d}{content_id(r['instruction'], r['input'])[:24]}" for i, r in enumerate(recs)]
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"

    # 1) bare encode: the model alone, already loaded (the most favourable baseline)
    emb = Embedder(resolve_model("default"), 256, device, "float32", args.batch_size, cpu_threads=os.cpu_count())
    emb.encode(texts[:64])
    t0 = time.perf_counter()
    emb.encode(texts)
    bare_s = time.perf_counter() - t0
    gpu_mem = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    del emb

    # 2) the stage: Ray Data read -> actor pool -> Parquet, start-up included
    import ray

    tmp = tempfile.mkdtemp(prefix="bench-embed-")
    run = RunDir(os.path.join(tmp, "run"))
    run.fs.makedirs(run.path("dedup"), exist_ok=True)
    table = pa.table({"id": ids, "instruction": [r["instruction"] for r in recs], "input": [r["input"] for r in recs],
                      "text": texts, "source": [r["source"] for r in recs], "source_row": list(range(len(recs)))},
                     schema=DEDUP)
    n_files = 4
    step = -(-len(recs) // n_files)
    for j in range(n_files):
        pq.write_table(table.slice(j * step, step), run.path("dedup", f"part-{j:05d}.parquet"))
    run.record_stage("dedup", {"status": "complete", "output_token": "bench", "input_fingerprint": "-",
                               "settings_hash": "-"})
    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if gpu else 0, include_dashboard=False, logging_level="ERROR")
    from selectllm.embed.ray_job import run_stage

    cfg = load_config(None, [f"embed.batch_size={args.batch_size}"])
    ctx = StageContext(cfg=cfg, run=run, stage="embed", out=run.new_staging("embed"))
    t0 = time.perf_counter()
    counts = run_stage(ctx)
    stage_s = time.perf_counter() - t0
    ray.shutdown()
    assert counts["rows"] == len(recs)
    print(json.dumps({
        "rows": len(recs), "device": device, "batch_size": args.batch_size, "cpus": os.cpu_count(),
        "bare_rows_per_s": round(len(recs) / bare_s, 1), "stage_rows_per_s": round(len(recs) / stage_s, 1),
        "ratio_stage_vs_bare": round(bare_s / stage_s, 3), "bare_s": round(bare_s, 2), "stage_s": round(stage_s, 2),
        "gpu_max_mem_mib": None if gpu_mem is None else round(gpu_mem, 1),
    }))


if __name__ == "__main__":
    main()
