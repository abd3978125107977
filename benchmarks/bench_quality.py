"""Picks that represent the pool: allocations and baselines side by side, and the low-information filter.

    python benchmarks/bench_quality.py --pool dolly [--budget 200] [--run-dir DIR]
    python benchmarks/bench_quality.py --pool mixed [--rows 5000] [--budget 200] [--run-dir DIR]
    python benchmarks/bench_quality.py --filter

``--pool``: dedup -> embed -> cluster once (Spark local[2], Ray with 2 CPUs, the simulator as the
LLM), then ``selectllm compare`` with random, kcenter, kmeans-closest and selectllm at
``select.allocation: equal``, then selectllm again at ``sqrt`` and ``proportional`` (same clusters,
same cache).  Prints the cluster sizes (largest share, Gini) and every figure of compare.json
(coverage, report/quality.py's representation figures with random's 3-seed band) as a markdown
table, then one JSON object.  ``dolly``: ``dolly_subsets.jsonl`` without a seeded 1,000-row test
split (nothing marks select-llm's own test rows, so a seeded split stands in for them); ``mixed``:
``--rows`` rows interleaved from the nine files of ../shared/data.

``--filter``: the low-information rules (selectllm/text/quality.py) over every row of
../shared/data (the false-positive rate: these are curated rows) and over planted junk (seeded:
test strings, random tokens, base64, URLs, symbols, digits, repetition, template fields): the
share caught per kind and the precision on the two together.  Pure Python, seconds.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

BASELINES = ["random", "kcenter", "kmeans-closest"]
ALLOCATIONS = ["equal", "sqrt", "proportional"]
TEST_ROWS = 1000
FIGURES = ["coverage_max", "coverage_p99", "coverage_mean", "sparse_share", "dense_share", "topic_tvd", "source_tvd",
           "input_tvd", "length_tvd", "length_ratio", "duplicate_rate", "low_quality_rate", "diversity", "requests"]


def dolly_pool() -> list[dict]:
    from _data import SHARED

    rows = [json.loads(line) for line in (SHARED / "dolly_subsets.jsonl").open(encoding="utf-8") if line.strip()]
    test = set(random.Random(0).sample(range(len(rows)), TEST_ROWS))
    return [{"instruction": r["instruction"], "input": r.get("input") or "", "source": r.get("source", "")}
            for i, r in enumerate(rows) if i not in test]


def junk(per_kind: int = 50, seed: int = 0) -> list[tuple[str, str]]:
    """(kind, instruction) planted junk."""
    rng = random.Random(seed)
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    words = ["ok", "test", "buy", "yes", "no", "spam", "click"]
    kinds = {
        "test string": lambda: rng.choice(["test", "testing", "Test", "TEST", "asdf", "foo", "qwerty"]) + rng.choice(["", " 123", " 1", "!", " test"]),
        "random token": lambda: "".join(rng.choice(alnum) for _ in range(rng.randint(8, 40))),
        "base64": lambda: base64.b64encode(rng.randbytes(rng.randint(16, 64))).decode(),
        "url": lambda: f"https://{rng.choice(['example.com', 'bit.ly', 'foo.org'])}/" + "".join(rng.choice(alnum) for _ in range(rng.randint(6, 30))),
        "symbols": lambda: "".join(rng.choice("!?.#$%*&-=+") for _ in range(rng.randint(3, 20))),
        "digits": lambda: " ".join(str(rng.randint(0, 9999)) for _ in range(rng.randint(1, 6))),
        "repetition": lambda: " ".join([rng.choice(words)] * rng.randint(4, 10)),
        "template field": lambda: rng.choice(["{instruction}", "{{input}}", "<noinput>", "[INST]", "${prompt}", "N/A", "<instruction></instruction>"]),
        "lorem ipsum": lambda: "Lorem ipsum dolor sit amet" + rng.choice(["", ", consectetur adipiscing elit."]),
    }
    return [(kind, make()) for kind, make in kinds.items() for _ in range(per_kind)]


def filter_figures() -> dict:
    from _data import FILES, load_records

    from selectllm.text.quality import low_quality_rule

    t0 = time.perf_counter()
    real, flagged, per_file, examples = 0, Counter(), Counter(), []
    for name in FILES:
        for r in load_records(files=[name]):
            real += 1
            rule = low_quality_rule(r["instruction"])
            if rule:
                flagged[rule] += 1
                per_file[name] += 1
                examples.append({"file": name, "rule": rule, "instruction": r["instruction"][:120]})
    planted = junk()
    caught, by_kind, missed = Counter(), Counter(), []
    for kind, text in planted:
        by_kind[kind] += 1
        if low_quality_rule(text):
            caught[kind] += 1
        elif len(missed) < 12:
            missed.append({"kind": kind, "instruction": text})
    fp, tp = sum(flagged.values()), sum(caught.values())
    return {"real_rows": real, "real_flagged": fp, "false_positive_rate": fp / real, "real_flagged_by_rule": dict(flagged),
            "real_flagged_examples": examples, "junk_rows": len(planted), "junk_caught": tp,
            "junk_recall": tp / len(planted), "junk_recall_by_kind": {k: caught[k] / n for k, n in by_kind.items()},
            "precision_on_real_plus_junk": tp / (tp + fp) if tp + fp else None, "junk_missed_examples": missed,
            "seconds": round(time.perf_counter() - t0, 1)}


def cluster_figures(run) -> dict:
    import numpy as np
    import pyarrow.parquet as pq

    sizes = np.sort(pq.read_table(run.path("cluster", "centers.parquet")).column("size").to_numpy())
    n = sizes.sum()
    gini = float(1 - 2 * np.sum(np.cumsum(sizes) / n) / len(sizes) + 1 / len(sizes))
    return {"k": int(len(sizes)), "largest_share": float(sizes[-1] / n), "gini": round(gini, 3),
            "clusters_le_5_rows": int((sizes <= 5).sum())}


def markdown(columns: dict, band: dict) -> str:
    names = list(columns)
    head = "| figure | " + " | ".join(names) + " | random, 3 seeds |"
    lines = [head, "|---" * (len(names) + 2) + "|"]
    for f in FIGURES:
        cells = []
        for n in names:
            v = columns[n].get(f)
            cells.append("–" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:.3f}"))
        b = band.get(f)
        lines.append(f"| {f} | " + " | ".join(cells) + " | " + ("–" if not b else f"{b[0]:.3f}–{b[1]:.3f}") + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", choices=["dolly", "mixed"])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--filter", action="store_true")
    ap.add_argument("--run-dir", default=None, help="reuse a run directory (its complete stages are skipped)")
    args = ap.parse_args()
    if args.filter:
        print(json.dumps(filter_figures(), indent=2, ensure_ascii=False))
        return
    if not args.pool:
        ap.error("--pool or --filter")

    from _data import load_records

    from selectllm.compare.stage import run_compare
    from selectllm.config import Config

    work = Path(args.run_dir or tempfile.mkdtemp(prefix=f"bench-quality-{args.pool}-"))
    work.mkdir(parents=True, exist_ok=True)
    # one file per source: dedup's `source` column (the file) then names the corpus a row came from
    rows = dolly_pool() if args.pool == "dolly" else load_records(args.rows)
    by_source: dict[str, list[dict]] = {}
    for r in rows:
        by_source.setdefault(r.get("source") or args.pool, []).append(r)
    paths = []
    for name, part in sorted(by_source.items()):
        path = work / "corpus" / f"{name}.jsonl"
        paths.append(str(path))
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as f:
                for r in part:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
    base = {
        "run_dir": str(work / "run"),
        "input": {"paths": paths, "format": "jsonl", "preset": "alpaca"},
        "select": {"strategy": "selectllm", "budget": args.budget},
        "llm": {"provider": "simulator", "model": "gpt-4o-mini", "rpm": 1_000_000, "tpm": 1_000_000_000,
                "concurrency": 32, "max_usd": 20.0, "engine": "local", "simulator": {"latency_ms": 5}},
        "spark": {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "4"}},
        "ray": {"num_cpus": 2},
    }
    columns: dict[str, dict] = {}
    band: dict = {}
    t0 = time.perf_counter()
    for allocation in ALLOCATIONS:
        cfg = Config.model_validate({**base, "select": {**base["select"], "allocation": allocation}})
        names = ["selectllm", *BASELINES] if allocation == "equal" else ["selectllm"]
        run, results = run_compare(cfg, names)
        columns[f"selectllm {allocation}"] = results["selectllm"]
        if allocation == "equal":
            band = results["selectllm"].get("random_band") or {}
            for name in BASELINES:
                columns[name] = results[name]
    stages = run.manifest().get("stages", {})
    out = {"pool": args.pool, "pool_rows": stages.get("cluster", {}).get("counts", {}).get("rows"),
           "budget": args.budget, "run_dir": run.url, "clusters": cluster_figures(run),
           "seconds": round(time.perf_counter() - t0, 1),
           "strategies": {n: {f: r.get(f) for f in FIGURES} for n, r in columns.items()}, "random_band": band}
    print(markdown(columns, band))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
