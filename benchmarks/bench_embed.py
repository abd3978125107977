"""Embed stage throughput vs bare ``SentenceTransformer.encode`` on the same rows, same process.

    python benchmarks/bench_embed.py [--rows 4000] [--batch-size 64] [--rounds 3]

Prints one JSON object: rows/s of both, their ratio (the stage includes Ray start-up of the actor
pool, model load, Parquet read and write), device, and GPU memory when a GPU is used.  Also the
seconds until the stage's first output file appears (actor start-up and model load, a fixed cost
per run, plus the first file's rows) and the stage's rows/s from its first to its last output
file (steady state; the files are taken as equal-sized), hence an estimate of the start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from _data import load_records

    from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT, load_config
    from selectllm.embed.embedder import Embedder, resolve_model
    from selectllm.pipeline import stage_context
    from selectllm.rundir import RunDir
    from selectllm.schemas import DEDUP
    from selectllm.text.normalize import content_id, render_text

    recs = load_records(args.rows)
    texts = [render_text(r["instruction"], r["input"], PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) for r in recs]
    ids = [f"{i:08d}{content_id(r['instruction'], r['input'])[:24]}" for i, r in enumerate(recs)]
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"

    # The two are measured alternately (bare, stage, bare, stage, ...) so that load from other
    # processes on a shared machine hits both alike; the ratio reported is the median of the pairs.
    emb = Embedder(resolve_model("default"), 256, device, "float32", args.batch_size, cpu_threads=os.cpu_count())
    emb.encode(texts[:64])

    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if gpu else 0, include_dashboard=False,
             logging_level="ERROR")
    from selectllm.embed.stage import run_stage

    cfg = load_config(None, [f"embed.batch_size={args.batch_size}"])
    table = pa.table({"id": ids, "instruction": [r["instruction"] for r in recs], "input": [r["input"] for r in recs],
                      "text": texts, "source": [r["source"] for r in recs], "source_row": list(range(len(recs)))},
                     schema=DEDUP)

    def bare() -> float:
        t0 = time.perf_counter()
        emb.encode(texts)
        return time.perf_counter() - t0

    def stage() -> float:
        run = RunDir(tempfile.mkdtemp(prefix="bench-embed-"))
        run.fs.makedirs(run.path("dedup"), exist_ok=True)
        step = -(-len(recs) // 4)
        for j in range(4):
            pq.write_table(table.slice(j * step, step), run.path("dedup", f"part-{j:05d}.parquet"))
        run.record_stage("dedup", {"status": "complete", "output_token": "bench", "input_fingerprint": "-",
                                   "settings_hash": "-"})
        ctx = stage_context(cfg, run, "embed")
        done = threading.Event()
        seen: dict[str, float] = {}  # output file -> when it appeared

        def watch() -> None:  # when each output file appears: start-up vs steady throughput
            while not done.is_set():
                for p in Path(run.path("_work")).rglob("*.parquet"):
                    seen.setdefault(str(p), time.perf_counter())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        t0 = time.perf_counter()
        watcher.start()
        counts = run_stage(ctx)  # actor start-up, model load, Parquet read and write included
        total = time.perf_counter() - t0
        done.set()
        watcher.join()
        assert counts["rows"] == len(recs)
        times = sorted(seen.values())
        firsts.append(round(times[0] - t0, 1) if times else None)
        if len(times) >= 2:  # rows/s between the first and the last file (all files but the first)
            rate = (len(recs) - len(recs) / len(times)) / (times[-1] - times[0])
            steady.append(round(rate, 1))
            startup.append(round(times[0] - t0 - len(recs) / len(times) / rate, 1))
        return total

    firsts: list = []
    steady: list = []
    startup: list = []
    pairs = [(bare(), stage()) for _ in range(args.rounds)]
    gpu_mem = torch.cuda.max_memory_allocated() / 2**20 if gpu else None
    ray.shutdown()
    ratios = sorted(b / s for b, s in pairs)
    n = len(recs)
    print(json.dumps({
        "rows": n, "device": device, "batch_size": args.batch_size, "cpus": os.cpu_count(), "rounds": args.rounds,
        "bare_rows_per_s": [round(n / b, 1) for b, _ in pairs],
        "stage_rows_per_s": [round(n / s, 1) for _, s in pairs],
        "ratio_stage_vs_bare_median": round(ratios[len(ratios) // 2], 3),
        "ratio_stage_vs_bare_each": [round(r, 3) for r in ratios],
        "stage_seconds_to_first_file": firsts,
        "stage_steady_rows_per_s": steady,
        "stage_startup_seconds_estimate": startup,
        "gpu_max_mem_mib": None if gpu_mem is None else round(gpu_mem, 1),
    }))


if __name__ == "__main__":
    main()
