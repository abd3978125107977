"""The report on a big synthetic run: page size and time stay bounded as the groups grow.

A run directory with ``--groups`` LLM groups of 8 candidates (real instruction texts from
../shared/data, repeated; 64-hex ids like the project's), 384-d embeddings and one cluster per
group; the report stage builds ``report.html``.  Prints one JSON object: groups, pool rows,
groups embedded by the explorer, page bytes and the report stage's seconds.

    python benchmarks/bench_report.py --groups 20000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import load_records  # noqa: E402

from selectllm import schemas  # noqa: E402
from selectllm.config import load_config  # noqa: E402
from selectllm.pipeline import stage_context  # noqa: E402
from selectllm.report.stage import run_stage  # noqa: E402
from selectllm.rundir import RunDir  # noqa: E402

CANDIDATES = 8
DIM = 384


def make_run(root: Path, groups: int) -> int:
    records = load_records(limit=20_000)
    n = groups * CANDIDATES
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    rec = [records[i % len(records)] for i in range(n)]
    (root / "dedup").mkdir(parents=True)
    pq.write_table(pa.table({"id": ids, "instruction": [r["instruction"] for r in rec],
                             "input": [r["input"] for r in rec], "text": [r["instruction"] for r in rec],
                             "source": [r["source"] or "shared.jsonl" for r in rec], "source_row": list(range(n))},
                            schema=schemas.DEDUP), root / "dedup" / "part-00000.parquet")
    (root / "dedup" / "stats.json").write_text(json.dumps({"read": n, "kept": n, "quarantined": {}}))
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    (root / "embed").mkdir()
    pq.write_table(pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), DIM)}),
                   root / "embed" / "part-00000.parquet")
    cluster = np.arange(n) // CANDIDATES
    (root / "cluster").mkdir()
    pq.write_table(pa.table({"id": ids, "cluster_id": cluster, "distance": np.zeros(n, np.float32),
                             "is_center": np.arange(n) % CANDIDATES == 0}, schema=schemas.ASSIGNMENTS),
                   root / "cluster" / "assignments.parquet")
    pq.write_table(pa.table({"cluster_id": np.arange(groups), "id": ids[::CANDIDATES],
                             "size": np.full(groups, CANDIDATES), "radius": np.ones(groups, np.float32)},
                            schema=schemas.CENTERS), root / "cluster" / "centers.parquet")
    status = np.where(np.arange(groups) % 17 == 0, "fallback", "ok")
    (root / "select").mkdir()
    pq.write_table(pa.table({
        "group_id": np.arange(groups), "cluster_id": np.arange(groups),
        "candidate_ids": [ids[g * CANDIDATES:(g + 1) * CANDIDATES] for g in range(groups)],
        "chosen_ids": [[ids[g * CANDIDATES]] for g in range(groups)], "status": status,
        "reason": np.where(status == "ok", "", "answer named no candidate"),
        "input_tokens": np.full(groups, 600), "output_tokens": np.full(groups, 6), "usd": np.full(groups, 1e-4)},
        schema=schemas.DECISIONS), root / "select" / "decisions.parquet")
    with open(root / "selected.jsonl", "w") as f:
        for g in range(groups):
            i = g * CANDIDATES
            f.write(json.dumps({"id": ids[i], "instruction": rec[i]["instruction"], "input": rec[i]["input"],
                                "source": "shared.jsonl", "cluster_id": g, "strategy": "selectllm"}) + "\n")
    stages = {s: {"status": "complete", "seconds": 1.0} for s in ("dedup", "embed", "cluster", "select")}
    (root / "manifest.json").write_text(json.dumps({"stages": stages}))
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=20_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        root = Path(tmp)
        n = make_run(root, args.groups)
        ctx = stage_context(load_config(None, [f"select.budget={args.groups}"]), RunDir(str(root)), "report")
        t0 = time.perf_counter()
        counts = run_stage(ctx)
        seconds = time.perf_counter() - t0
        page = (Path(ctx.out) / "report.html").read_text(encoding="utf-8")
        embedded = page.count('"g":')
    print(json.dumps({"groups": args.groups, "pool_rows": n, "explorer_groups": embedded,
                      "page_bytes": counts["bytes"], "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    main()
