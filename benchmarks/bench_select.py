"""The select stage alone on a synthetic pool of N rows: seconds and the driver's peak RSS.

    python benchmarks/bench_select.py --rows 3000000 [--parts 8] [--budget 300] [--work /tmp/bench_select]
                                      [--strategy selectllm] [--set key=value]...

Writes a run directory whose dedup and cluster stages stand complete (``--parts`` dedup parts and
as many ``cluster/assignments.parquet/`` parts, rows in random order, k = budget clusters of
geometric sizes, short texts; ids are SHA-256 hex like dedup's), then runs the select stage in a
fresh process (the pipeline's ``run_stage``, the simulator as the LLM) and samples that
process's RSS alone with psutil every 0.2 s.  Prints one JSON object.  The point: the select
driver's peak should not grow with N (the pool stays in its part files; see README, **select**).
Run it with another checkout first on ``PYTHONPATH`` to measure that checkout's select stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = np.asarray("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
                   "tau upsilon phi chi psi omega write explain list summarize translate compute".split())

RUN = """
import sys
from selectllm.config import load_config
from selectllm.pipeline import BY_NAME, run_stage
from selectllm.rundir import RunDir
cfg = load_config(None, sys.argv[1:])
entry = run_stage(cfg, RunDir(cfg.run_dir), BY_NAME["select"])
print("COUNTS", entry.get("counts"))
"""


def build(root: Path, n: int, parts: int, k: int, seed: int = 0) -> None:
    from selectllm import schemas

    rng = np.random.default_rng(seed)
    for sub in ("dedup", "cluster/assignments.parquet", "embed"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    centers = []
    for p, (a, b) in enumerate(zip(np.linspace(0, n, parts + 1).astype(int)[:-1], np.linspace(0, n, parts + 1).astype(int)[1:])):
        ids = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(a, b)]
        m = b - a
        words = WORDS[rng.integers(0, len(WORDS), (m, 12))]
        instr = [" ".join(w[: 4 + (i % 8)]) for i, w in enumerate(words)]
        pq.write_table(pa.table({"id": ids, "instruction": instr, "input": [""] * m, "text": instr,
                                 "source": ["synthetic.jsonl"] * m, "source_row": np.arange(a, b)},
                                schema=schemas.DEDUP), str(root / "dedup" / f"part-{p:05d}.parquet"))
        labels = np.minimum(rng.geometric(1.0 / max(1, n // k), m) % k, k - 1) if k else np.zeros(m, np.int64)
        if p == 0:
            labels[:k] = np.arange(k)
            centers = ids[:k]
        dist = rng.random(m).astype(np.float32)
        if p == 0:
            dist[:k] = 0.0
        order = rng.permutation(m)
        pq.write_table(pa.table({"id": [ids[i] for i in order], "cluster_id": labels[order].astype(np.int64),
                                 "distance": dist[order], "is_center": np.zeros(m, bool)}, schema=schemas.ASSIGNMENTS),
                       str(root / "cluster" / "assignments.parquet" / f"part-{p:05d}.parquet"))
    pq.write_table(pa.table({"cluster_id": np.arange(k, dtype=np.int64), "id": centers,
                             "size": np.zeros(k, np.int64), "radius": np.zeros(k, np.float32)}, schema=schemas.CENTERS),
                   str(root / "cluster" / "centers.parquet"))
    (root / "manifest.json").write_text(json.dumps({"stages": {
        s: {"status": "complete", "seconds": 0.0, "counts": {}, "output_token": f"tok-{s}",
            "input_fingerprint": "synthetic", "settings_hash": "synthetic"} for s in ("dedup", "embed", "cluster")}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--strategy", default="selectllm")
    ap.add_argument("--work", default="/tmp/bench_select")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    import psutil

    root = Path(args.work) / f"run_{args.rows}"
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    build(root, args.rows, args.parts, args.budget)
    built = time.perf_counter() - t0
    sets = [f"run_dir={root}", f"select.budget={args.budget}", f"select.strategy={args.strategy}",
            "llm.simulator.latency_ms=1", "llm.rpm=1000000", "llm.tpm=1000000000", *args.sets]
    env = {**os.environ, "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", RUN, *sets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    me, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, me.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    out = proc.stdout.read()
    if proc.returncode:
        print(out[-3000:], file=sys.stderr)
    counts = next((line[7:] for line in out.splitlines() if line.startswith("COUNTS ")), None)
    import selectllm

    print(json.dumps({"rows": args.rows, "parts": args.parts, "budget": args.budget, "strategy": args.strategy,
                      "code": str(Path(selectllm.__file__).resolve().parents[1]), "rc": proc.returncode,
                      "build_seconds": round(built, 1), "select_seconds": round(seconds, 1),
                      "driver_peak_rss_mb": round(peak / 2**20, 1), "counts": counts}, indent=1))


if __name__ == "__main__":
    main()
