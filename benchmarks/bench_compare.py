"""``selectllm compare`` on real instructions from ../shared/data: every strategy, same embeddings.

    python benchmarks/bench_compare.py [--rows 6000] [--budget 300] [--strategies a,b,c] [--run-dir DIR]

Builds a corpus of ``--rows`` records interleaved from the shared files, runs dedup -> embed ->
cluster once (Spark local[2], Ray with 2 CPUs), then every strategy with the local LLM simulator,
and prints the comparison table (markdown) and one JSON object: per-strategy metrics, the shared
stages' seconds, and selectllm-paper's input tokens per selected row next to the paper's figure
(REFERENCE.md §6: about 1.7-1.9M input tokens for a 1,000-3,000 row selection).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--paper-subsets", type=int, default=1000)
    ap.add_argument("--strategies", default="selectllm,selectllm-paper,random,kcenter,kmeans-closest,length,alpagasus")
    ap.add_argument("--run-dir", default=None, help="reuse a run directory (its complete stages are skipped)")
    args = ap.parse_args()

    from _data import bench_corpus

    from selectllm.compare.stage import markdown_table, parse_strategies, run_compare
    from selectllm.config import Config
    from selectllm.report.compare_html import PAPER_INPUT_TOKENS, PAPER_ROWS, PAPER_TOKENS_PER_ROW

    work, corpus = bench_corpus(args.run_dir, "bench-compare-", args.rows)
    cfg = Config.model_validate({
        "run_dir": str(work / "run"),
        "input": {"paths": [str(corpus)], "format": "jsonl", "preset": "alpaca"},
        "embed": {"batch_size": 64},
        "select": {"strategy": "selectllm", "budget": args.budget, "paper_subsets": args.paper_subsets},
        "llm": {"provider": "simulator", "model": "gpt-4o-mini", "rpm": 1_000_000, "tpm": 1_000_000_000,
                "concurrency": 32, "max_usd": 20.0, "engine": "local", "simulator": {"latency_ms": 5}},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4"}},
        "ray": {"num_cpus": 2},
    })
    names = parse_strategies(args.strategies)
    t0 = time.perf_counter()
    run, results = run_compare(cfg, names)
    total = time.perf_counter() - t0
    stages = run.manifest().get("stages", {})
    pool = stages.get("embed", {}).get("counts", {}).get("rows") or stages.get("cluster", {}).get("counts", {}).get("rows")

    out = {"rows_read": args.rows, "pool": pool, "budget": args.budget, "run_dir": run.url,
           "shared_stage_seconds": {s: stages[s].get("seconds") for s in ("dedup", "embed", "cluster") if s in stages},
           "total_seconds": round(total, 1),
           "strategies": {k: {m: v for m, v in r.items() if m != "groups_by_status"} for k, r in results.items()},
           "groups_by_status": {k: r.get("groups_by_status") for k, r in results.items()}}
    if "selectllm-paper" in results:
        p = results["selectllm-paper"]
        n_prompts = max(1, p["requests"])
        out["paper_tokens"] = {
            "input_tokens": p["input_tokens"], "selected": p["selected"], "prompts": p["requests"],
            "input_tokens_per_selected": p["tokens_per_selected"],
            "input_tokens_per_prompt": round(p["input_tokens"] / n_prompts, 1),
            "input_tokens_per_pool_row": round(p["input_tokens"] / pool, 1) if pool else None,
            "paper_input_tokens": list(PAPER_INPUT_TOKENS), "paper_selected": list(PAPER_ROWS),
            "paper_input_tokens_per_selected": [round(v, 1) for v in PAPER_TOKENS_PER_ROW],
            "within_paper_figure": p["tokens_per_selected"] <= PAPER_TOKENS_PER_ROW[1],
        }
    if "selectllm" in results and "random" in results:
        s, r = results["selectllm"], results["random"]
        out["selectllm_vs_random"] = {k: {"selectllm": s[k], "random": r[k], "selectllm_better": s[k] < r[k]}
                                      for k in ("coverage_max", "coverage_p99", "coverage_mean")}
    print(markdown_table(results))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
