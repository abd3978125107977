"""``selectllm evaluate`` on Dolly: does a model fine-tuned on a strategy's picks do better?

    python benchmarks/bench_evaluate.py [--budget 50] [--seeds 0,1,2] [--strategies selectllm,random,kcenter]
        [--test-rows 100] [--generate-rows 20] [--max-length 128] [--max-new-tokens 48] [--run-dir DIR]

``../shared/data/dolly_subsets.jsonl`` (3,773 human-written rows with responses) is split with a
seeded permutation (seed 0): 1,000 test rows (the size of select-llm's Dolly test set; nothing in
the file marks which rows those were) and the rest as the pool.  The pool runs dedup -> embed ->
cluster, each strategy selects ``--budget`` rows (the LLM simulator as the chooser), SmolLM2-135M
(the bundled GGUF, CPU) is LoRA-fine-tuned on them for one epoch per seed and scored on a seeded
``--test-rows`` of the test rows.  Prints the table and one JSON object (the figures, the settings,
the seconds).  Rerun with the same ``--run-dir`` to resume (finished cells are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

DOLLY = Path(__file__).resolve().parents[2] / "shared" / "data" / "dolly_subsets.jsonl"
TEST_SPLIT = 1000


def split(work: Path) -> tuple[Path, Path, int]:
    import numpy as np

    rows = [json.loads(line) for line in DOLLY.read_text(encoding="utf-8").splitlines() if line.strip()]
    order = np.random.default_rng(0).permutation(len(rows))
    pool, test = work / "dolly_pool.jsonl", work / "dolly_test.jsonl"
    if pool.exists() and test.exists():  # a resumed run: the same files (their dates are part of the inputs)
        return pool, test, len(rows)
    for path, idx in ((test, order[:TEST_SPLIT]), (pool, order[TEST_SPLIT:])):
        with path.open("w", encoding="utf-8") as f:
            for i in sorted(idx):
                f.write(json.dumps(rows[i], ensure_ascii=False) + "\n")
    return pool, test, len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default="selectllm,random,kcenter")
    ap.add_argument("--test-rows", type=int, default=100)
    ap.add_argument("--generate-rows", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run-dir", default=None, help="reuse a run directory (finished stages and cells are kept)")
    args = ap.parse_args()

    from selectllm.compare.stage import parse_strategies
    from selectllm.config import Config
    from selectllm.evaluate.stage import parse_list, print_table, run_evaluate

    if not DOLLY.exists():
        raise SystemExit(f"{DOLLY} is not present")
    work = Path(args.run_dir or tempfile.mkdtemp(prefix="bench-evaluate-"))
    work.mkdir(parents=True, exist_ok=True)
    pool, test, total_rows = split(work)
    cfg = Config.model_validate({
        "run_dir": str(work / "run"),
        "input": {"paths": [str(pool)], "format": "jsonl", "preset": "alpaca", "keep": ["output"]},
        "embed": {"batch_size": 64},
        "select": {"strategy": "selectllm", "budget": args.budget},
        "llm": {"provider": "simulator", "model": "gpt-4o-mini", "rpm": 1_000_000, "tpm": 1_000_000_000,
                "concurrency": 32, "max_usd": 20.0, "engine": "local", "simulator": {"latency_ms": 5}},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4"}},
        "ray": {"num_cpus": 2},
        "evaluate": {"test_path": str(test), "response": "output", "test_rows": args.test_rows,
                     "generate_rows": args.generate_rows, "max_length": args.max_length,
                     "max_new_tokens": args.max_new_tokens, "epochs": args.epochs, "threads": args.threads},
    })
    t0 = time.perf_counter()
    run, doc = run_evaluate(cfg, parse_strategies(args.strategies), parse_list(args.seeds, int))
    seconds = time.perf_counter() - t0
    print_table(doc)
    stages = run.manifest().get("stages", {})
    slim = {name: {k: v for k, v in row.items() if k != "seeds"} | {
                "per_seed": [{k: c.get(k) for k in ("seed", "test_loss", "rouge_l", "cosine", "train_loss_first",
                                                     "train_loss_last", "rows_per_s", "seconds")} for c in row["seeds"]]}
            for name, row in doc["strategies"].items()}
    print(json.dumps({"dolly_rows": total_rows, "test_split": TEST_SPLIT, "pool_rows": total_rows - TEST_SPLIT,
                      "budget": args.budget, "settings": doc["settings"], "strategies": slim,
                      "stage_seconds": {s: stages[s].get("seconds") for s in stages},
                      "total_seconds": round(seconds, 1), "run_dir": run.url}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
