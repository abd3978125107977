"""Embedding backends against bare torch, same rows, same machine, alternating; then fidelity.

    python benchmarks/bench_embed.py [--rows 3000] [--fidelity-rows 5000] [--rounds 2]
                                     [--backends onnx,static] [--sizes static=100000,300000]
                                     [--set embed.key=value]... [--stage-only] [--k 100]

Speed: each round runs bare ``SentenceTransformer.encode`` (torch fp32, all cores, batch 64) on
``--rows`` rows, then the embed stage with each backend at each of its sizes (``--sizes``;
default ``--rows``): the whole ``run_stage`` call timed (unit planning, actor start-up, model
load, Parquet read, encode and write, the commit); the Ray runtime is already up, as in a
pipeline run; the onnx export / static distillation are cached beforehand and timed separately
as ``build_seconds``.  A backend's ratio is its stage rows/s over the bare torch rows/s of the
same round, so a slower or faster machine moment affects both sides.  Each stage input is four
Parquet parts (one row group each) of real instructions from ../shared/data, the paper's
template; sizes beyond the corpus (72,892 rows) repeat it with new ids.

``--stage-only`` skips bare torch and fidelity (comparing two checkouts of the stage:
``PYTHONPATH=<checkout> python benchmarks/bench_embed.py --stage-only ...``, alternately).

Fidelity, on ``--fidelity-rows`` real instructions against torch fp32 vectors: onnx min and mean
cosine; for every backend the share of each row's 10 nearest neighbours that are also MiniLM's,
and the coverage radius, on MiniLM's vectors, of a k-center selection (selectllm.cluster.kcenter)
made on the backend's vectors (MiniLM's own selection and a random one beside it).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PARTS = 4


def knn(x, k=10, block=2048):
    import numpy as np

    out = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ x.T
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -3
        out[s:s + block] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def parse_sizes(text: str, backends: list[str], default: int) -> dict[str, list[int]]:
    sizes = {b: [default] for b in backends}
    for item in filter(None, text.split(";")):
        name, _, rows = item.partition("=")
        sizes[name.strip()] = [int(r) for r in rows.split(",") if r.strip()]
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=3000, help="rows for bare torch (and backends without --sizes)")
    ap.add_argument("--fidelity-rows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--backends", default="onnx,static")
    ap.add_argument("--sizes", default="", help="per backend stage sizes: 'static=100000,300000;onnx=3000'")
    ap.add_argument("--set", action="append", default=[], help="config override for the stage runs")
    ap.add_argument("--stage-only", action="store_true", help="no bare torch, no fidelity")
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    sizes = parse_sizes(args.sizes, backends, args.rows)

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from _data import load_records

    import selectllm
    from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT, load_config
    from selectllm.embed.backends import prepare
    from selectllm.embed.embedder import Embedder, resolve_model
    from selectllm.pipeline import stage_context
    from selectllm.rundir import RunDir
    from selectllm.schemas import DEDUP
    from selectllm.text.normalize import content_id, render_text

    recs = load_records(None)
    texts = [render_text(r["instruction"], r["input"], PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) for r in recs]
    cpus = os.cpu_count()
    model = resolve_model("default")
    torch_enc = None
    if not args.stage_only:
        torch_enc = Embedder(model, 256, "cpu", "float32", 64, cpu_threads=cpus)
        torch_enc.encode(texts[:64])

    build = {}
    for b in backends:
        cfg = load_config(None, [f"embed.backend={b}"] + args.set)
        t0 = time.perf_counter()
        prepare(cfg, b, model)
        build[b] = round(time.perf_counter() - t0, 2)  # ~0 when the cache already had it

    def dedup_table(rows: int) -> pa.Table:
        idx = np.arange(rows) % len(recs)
        return pa.table({
            "id": [f"{i:08d}{content_id(recs[j]['instruction'], recs[j]['input'])[:24]}" for i, j in enumerate(idx)],
            "instruction": [recs[j]["instruction"] for j in idx], "input": [recs[j]["input"] for j in idx],
            "text": [texts[j] for j in idx], "source": [recs[j]["source"] for j in idx],
            "source_row": list(range(rows))}, schema=DEDUP)

    tables = {n: dedup_table(n) for n in sorted({n for b in backends for n in sizes[b]})}
    ray.init(address="local", num_cpus=cpus, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    from selectllm.embed.stage import run_stage

    def stage(backend: str, table: pa.Table) -> tuple[float, dict]:
        folder = tempfile.mkdtemp(prefix="bench-embed-")
        try:
            run = RunDir(folder)
            run.fs.makedirs(run.path("dedup"), exist_ok=True)
            step = -(-len(table) // PARTS)
            for j in range(PARTS):
                pq.write_table(table.slice(j * step, step), run.path("dedup", f"part-{j:05d}.parquet"))
            run.record_stage("dedup", {"status": "complete", "output_token": "bench", "input_fingerprint": "-",
                                       "settings_hash": "-"})
            cfg = load_config(None, [f"embed.backend={backend}"] + args.set)
            ctx = stage_context(cfg, run, "embed")
            t0 = time.perf_counter()
            counts = run_stage(ctx)
            seconds = time.perf_counter() - t0
            assert counts["rows"] == len(table)
            return seconds, counts
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    bare_s: list[float] = []
    stage_s = {b: {n: [] for n in sizes[b]} for b in backends}
    plans = {}
    for _ in range(args.rounds):
        if torch_enc is not None:
            t0 = time.perf_counter()
            torch_enc.encode(texts[:args.rows])
            bare_s.append(time.perf_counter() - t0)
        for b in backends:
            for n in sizes[b]:
                s, counts = stage(b, tables[n])
                stage_s[b][n].append(s)
                plans[b] = {k: counts[k] for k in ("actors", "threads", "batch_size", "files")}
    ray.shutdown()

    speed: dict = {"checkout": str(Path(selectllm.__file__).resolve().parents[1])}
    bare_rate = [args.rows / s for s in bare_s]
    if bare_s:
        speed["bare_torch"] = {"rows": args.rows, "rows_per_s": [round(r, 1) for r in bare_rate]}
    for b in backends:
        speed[b] = {"plan": plans[b], "build_seconds": build[b], "sizes": []}
        for n in sizes[b]:
            entry = {"rows": n, "stage_seconds": [round(s, 2) for s in stage_s[b][n]],
                     "stage_rows_per_s": [round(n / s, 1) for s in stage_s[b][n]]}
            if bare_rate:
                entry["ratio_vs_bare_torch"] = [round(n / s / r, 2) for s, r in zip(stage_s[b][n], bare_rate)]
            speed[b]["sizes"].append(entry)
    result = {"cpus": cpus, "rounds": args.rounds, "set": args.set, "speed": speed}
    if args.stage_only or not args.fidelity_rows:
        print(json.dumps(result))
        return

    # fidelity against torch fp32
    from selectllm.cluster.kcenter import assign, farthest_first
    from selectllm.embed.backends import make_encoder, plan

    nf = args.fidelity_rows
    ref = torch_enc.encode(texts[:nf])
    ref_nn = knn(ref)
    ref_centers, ref_md = farthest_first(ref, args.k)
    rnd = np.random.default_rng(0).choice(nf, args.k, replace=False)
    fidelity = {"rows": nf, "k": args.k,
                "radius_on_minilm": {"minilm_selection": round(float(ref_md.max()), 4),
                                     "random_selection": round(float(assign(ref, rnd)[1].max()), 4)}}
    for b in backends:
        cfg = load_config(None, [f"embed.backend={b}"] + args.set)
        p = plan(cfg, cpus, 0)
        x = make_encoder(b, model, max_seq_length=256, device="cpu", batch_size=p.batch_size, threads=cpus,
                         onnx_int8=cfg.embed.onnx_int8, static_dims=cfg.embed.static_dims).encode(texts[:nf])
        nn = knn(x)
        overlap = float(np.mean([len(set(a) & set(c)) for a, c in zip(nn, ref_nn)]) / 10)
        centers, _ = farthest_first(x, args.k)
        f = {"knn10_overlap_with_minilm": round(overlap, 4),
             "radius_on_minilm_of_its_selection": round(float(assign(ref, centers)[1].max()), 4)}
        if x.shape[1] == ref.shape[1]:
            cos = (x * ref).sum(1)
            f.update({"cosine_min": round(float(cos.min()), 4), "cosine_mean": round(float(cos.mean()), 5)})
        fidelity[b] = f
    result["fidelity"] = fidelity
    print(json.dumps(result))


if __name__ == "__main__":
    main()
