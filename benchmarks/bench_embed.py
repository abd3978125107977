"""Embedding backends against bare torch, same rows, same machine, alternating; then fidelity.

    python benchmarks/bench_embed.py [--rows 2000] [--fidelity-rows 5000] [--rounds 1]
                                     [--backends onnx,static] [--k 100]

Speed: each round runs bare ``SentenceTransformer.encode`` (torch fp32, all cores, batch 64) on
the rows, then the embed stage with each backend (Ray actor pool, Parquet read and write, actor
start-up and model load included; the onnx export / static distillation are cached beforehand and
timed separately as ``build_seconds``).  Ratios are bare seconds / stage seconds, per round.

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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def knn(x, k=10, block=2048):
    import numpy as np

    out = np.empty((len(x), k), dtype=np.int64)
    for s in range(0, len(x), block):
        sims = x[s:s + block] @ x.T
        sims[np.arange(len(sims)), np.arange(s, s + len(sims))] = -3
        out[s:s + block] = np.argpartition(-sims, k, axis=1)[:, :k]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--fidelity-rows", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--backends", default="onnx,static")
    ap.add_argument("--k", type=int, default=100)
    args = ap.parse_args()
    backends = [b for b in args.backends.split(",") if b]

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from _data import load_records

    from selectllm.cluster.kcenter import assign, farthest_first
    from selectllm.config import PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT, load_config
    from selectllm.embed.backends import make_encoder, plan, prepare
    from selectllm.embed.embedder import Embedder, resolve_model
    from selectllm.pipeline import stage_context
    from selectllm.rundir import RunDir
    from selectllm.schemas import DEDUP
    from selectllm.text.normalize import content_id, render_text

    n_all = max(args.rows, args.fidelity_rows)
    recs = load_records(n_all)
    texts = [render_text(r["instruction"], r["input"], PAPER_TEMPLATE, PAPER_TEMPLATE_NO_INPUT) for r in recs]
    ids = [f"{i:08d}{content_id(r['instruction'], r['input'])[:24]}" for i, r in enumerate(recs)]
    cpus = os.cpu_count()
    model = resolve_model("default")
    torch_enc = Embedder(model, 256, "cpu", "float32", 64, cpu_threads=cpus)
    torch_enc.encode(texts[:64])

    build = {}
    for b in backends:
        cfg = load_config(None, [f"embed.backend={b}"])
        t0 = time.perf_counter()
        prepare(cfg, b, model)
        build[b] = round(time.perf_counter() - t0, 2)  # ~0 when the cache already had it

    ray.init(address="local", num_cpus=cpus, num_gpus=0, include_dashboard=False, logging_level="ERROR")
    from selectllm.embed.stage import run_stage

    rows = args.rows
    table = pa.table({"id": ids[:rows], "instruction": [r["instruction"] for r in recs[:rows]],
                      "input": [r["input"] for r in recs[:rows]], "text": texts[:rows],
                      "source": [r["source"] for r in recs[:rows]], "source_row": list(range(rows))}, schema=DEDUP)

    def stage(backend: str) -> tuple[float, dict]:
        run = RunDir(tempfile.mkdtemp(prefix="bench-embed-"))
        run.fs.makedirs(run.path("dedup"), exist_ok=True)
        step = -(-rows // 4)
        for j in range(4):
            pq.write_table(table.slice(j * step, step), run.path("dedup", f"part-{j:05d}.parquet"))
        run.record_stage("dedup", {"status": "complete", "output_token": "bench", "input_fingerprint": "-",
                                   "settings_hash": "-"})
        cfg = load_config(None, [f"embed.backend={backend}"])
        ctx = stage_context(cfg, run, "embed")
        t0 = time.perf_counter()
        counts = run_stage(ctx)
        assert counts["rows"] == rows
        return time.perf_counter() - t0, counts

    bare_s, stage_s, plans = [], {b: [] for b in backends}, {}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        torch_enc.encode(texts[:rows])
        bare_s.append(time.perf_counter() - t0)
        for b in backends:
            s, counts = stage(b)
            stage_s[b].append(s)
            plans[b] = {k: counts[k] for k in ("actors", "threads", "batch_size")}
    ray.shutdown()

    speed = {"bare_torch_rows_per_s": [round(rows / s, 1) for s in bare_s]}
    for b in backends:
        ratios = [bs / s for bs, s in zip(bare_s, stage_s[b])]
        speed[b] = {"stage_rows_per_s": [round(rows / s, 1) for s in stage_s[b]],
                    "ratio_vs_bare_torch": [round(r, 2) for r in ratios], "plan": plans[b], "build_seconds": build[b]}

    # fidelity against torch fp32
    nf = args.fidelity_rows
    ref = torch_enc.encode(texts[:nf])
    ref_nn = knn(ref)
    ref_centers, ref_md = farthest_first(ref, args.k)
    rnd = np.random.default_rng(0).choice(nf, args.k, replace=False)
    fidelity = {"rows": nf, "k": args.k,
                "radius_on_minilm": {"minilm_selection": round(float(ref_md.max()), 4),
                                     "random_selection": round(float(assign(ref, rnd)[1].max()), 4)}}
    for b in backends:
        p = plan(load_config(None, [f"embed.backend={b}"]), cpus, 0)
        x = make_encoder(b, model, max_seq_length=256, device="cpu", batch_size=p.batch_size,
                         threads=cpus).encode(texts[:nf])
        nn = knn(x)
        overlap = float(np.mean([len(set(a) & set(c)) for a, c in zip(nn, ref_nn)]) / 10)
        centers, _ = farthest_first(x, args.k)
        f = {"knn10_overlap_with_minilm": round(overlap, 4),
             "radius_on_minilm_of_its_selection": round(float(assign(ref, centers)[1].max()), 4)}
        if x.shape[1] == ref.shape[1]:
            cos = (x * ref).sum(1)
            f.update({"cosine_min": round(float(cos.min()), 4), "cosine_mean": round(float(cos.mean()), 5)})
        fidelity[b] = f
    print(json.dumps({"rows": rows, "cpus": cpus, "rounds": args.rounds, "speed": speed, "fidelity": fidelity}))


if __name__ == "__main__":
    main()
