"""LLM layer benchmark against the local simulator: rate limits, kill + resume, hard budget.

Prints one JSON object (and writes it to --out).  Sections (--sections, comma separated):

* ``rpm``: --rpm-requests selection prompts through the Ray pool (``--engine``), client and
  simulator both at --rpm requests/min (the simulator enforces it over a sliding 60 s window),
  simulator latency --latency-ms.  From the simulator's request log (arrival times): the most
  requests admitted in any sliding 60 s window (must be <= rpm), the achieved rate after the
  client's initial burst and over the whole run, 429 answers (requests the server refused as
  over its limit), lost = sent - answered, keys paid twice.
* ``kill``: --kill-requests selection prompts (latency --latency-ms, high limits) run by a child
  process that is killed once half of the answers are stored, then rerun to the end.  Variants:
  ``ray-SIGTERM`` and ``local-SIGTERM`` (graceful stop: requests in flight are finished and stored)
  and ``local-SIGKILL`` (nothing can be saved: answers in flight at the kill are lost and bought
  again; at most llm.concurrency).  Duplicate paid requests = simulator 200 answers per key beyond
  the first; same_selection = the parsed picks equal those of an uninterrupted run.
* ``budget``: --budget-runs runs on one Ray pool, each with fresh prompts, a random cap (between
  0 and 1.2x the worst case of all its prompts) and sometimes a random prior spend; simulator with
  5xx and malformed answers and some length retries.  max(spend / cap) and the difference between
  the client's token accounting and the simulator's counters.

  python benchmarks/bench_llm.py                       # all sections, ~5 minutes on 2 cores
  python benchmarks/bench_llm.py --sections rpm --rpm-requests 1200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from selectllm.config import LLMConfig, PriceConfig, SimulatorConfig  # noqa: E402
from selectllm.llm.budget import cost_usd, max_request_cost  # noqa: E402
from selectllm.llm.cache import AnswerCache  # noqa: E402
from selectllm.llm.limiter import window_shape  # noqa: E402
from selectllm.llm.simulator import start_simulator  # noqa: E402
from selectllm.llm.tokens import count_message_tokens  # noqa: E402
from selectllm.llm.types import LLMRequest, request_key  # noqa: E402

MODEL = "gpt-4o-mini"
PRICE = PriceConfig(input_per_mtok=0.15, output_per_mtok=0.60)


# --------------------------------------------------------------------------- prompts


def sample_rows() -> list[tuple[str, str]]:
    rows = []
    with open(ROOT / "examples" / "sample.jsonl", encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and isinstance(r.get("instruction"), str) and r["instruction"].strip():
                row = (r["instruction"], r.get("input") if isinstance(r.get("input"), str) else "")
                if sum(map(len, row)) <= 4000:  # what the dedup stage keeps (the sample plants huge rows)
                    rows.append(row)
    return rows


def selection_requests(n: int, tag: str, per: int = 8, picks: int = 2, max_tokens: int = 64,
                       seed: int = 0) -> list[LLMRequest]:
    """``n`` selection prompts as the select stage builds them (same wording, same key recipe)."""
    from selectllm.select.prompts import PROMPT_VERSION, SELECTION_SCHEMA, selection_messages

    rows = sample_rows()
    rng = random.Random(f"{seed}-{tag}")
    out = []
    for g in range(n):
        cands = rng.sample(rows, per)
        cands[0] = (f"[{tag} {g}] " + cands[0][0], cands[0][1])  # every prompt distinct
        msgs = selection_messages(cands, picks, True)
        params = {"max_tokens": max_tokens, "temperature": 0.0, "response_format": "json_schema"}
        out.append(LLMRequest(key=request_key(MODEL, msgs, params, PROMPT_VERSION, endpoint="simulator"), group_id=g, messages=msgs,
                              max_tokens=max_tokens, response_format=SELECTION_SCHEMA,
                              meta={"candidates": per, "picks": picks}))
    return out


def picks(results, requests) -> list[list[int]]:
    from selectllm.select.parse import parse_selection

    return [list(parse_selection(r.text, q.meta["candidates"], q.meta["picks"]).positions) for r, q in
            zip(results, requests)]


def cfg_for(**kw) -> LLMConfig:
    base = dict(provider="simulator", model=MODEL, price=PRICE, max_usd=1000.0, concurrency=16, max_retries=8,
                rpm=600, tpm=10_000_000)
    base.update(kw)
    return LLMConfig(**base)


def stage_actors(cfg: LLMConfig, n: int) -> int:
    """The Ray pool the select stage would start for ``n`` requests (its ``select_workers``)."""
    import ray

    from selectllm.config import Config
    from selectllm.select.stage import select_workers

    return select_workers(Config(llm=cfg), ray.cluster_resources(), n)["llm_actors"]


def read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def max_in_window(ts: list[float], w: float) -> int:
    ts = sorted(ts)
    best = j = 0
    for i, t in enumerate(ts):
        while ts[j] <= t - w:
            j += 1
        best = max(best, i - j + 1)
    return best


def ray_up(address: str | None) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False, logging_level="WARNING",
                 **({} if address else {"num_cpus": os.cpu_count()}))


# --------------------------------------------------------------------------- sections


def bench_rpm(args) -> dict:
    from selectllm.llm.client import run_requests

    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-rpm-"))
    log = tmp / "sim.jsonl"
    reqs = selection_requests(args.rpm_requests, "rpm")
    cfg = cfg_for(rpm=args.rpm, concurrency=args.concurrency)
    stats: dict = {}
    if args.engine == "ray":
        ray_up(args.ray_address)
    with start_simulator(SimulatorConfig(latency_ms=args.latency_ms, rpm=args.rpm), str(log)) as sim:
        t0 = time.monotonic()
        if args.engine == "ray":
            from selectllm.llm.ray_pool import run_requests_ray

            res = run_requests_ray(reqs, cfg, str(tmp / "cache"), base_url=sim.base_url, progress=args.progress,
                                   api_key="sk-bench", stats=stats, actors=stage_actors(cfg, len(reqs)))
        else:
            res = run_requests(reqs, cfg, str(tmp / "cache"), base_url=sim.base_url, progress=args.progress,
                               engine="local")
        wall = time.monotonic() - t0
    lines = read_log(log)
    admitted = sorted(x["ts"] for x in lines if x["status"] != 429)
    paid = Counter(x["key"] for x in lines if x["status"] == 200)
    t_first, t_last = admitted[0], admitted[-1]
    burst = int(window_shape(args.rpm)[0])
    steady = admitted[burst:]  # after the client's initial burst: the sustained pace
    answered = sum(1 for r in res if r.status == "ok")
    out = {
        "engine": args.engine, "requests": len(reqs), "rpm_limit": args.rpm, "latency_ms": args.latency_ms,
        "concurrency": args.concurrency, "seconds": round(wall, 1),
        "span_s": round(t_last - t_first, 1),
        "max_in_any_60s_window": max_in_window(admitted, 60.0),
        "max_in_any_60s_window_over_limit": max_in_window(admitted, 60.0) / args.rpm,
        "achieved_rpm_whole_run": round(60.0 * (len(admitted) - 1) / (t_last - t_first), 1),
        "http_429": sum(1 for x in lines if x["status"] == 429),
        "http_5xx": sum(1 for x in lines if x["status"] >= 500),
        "sent_unique": len(reqs), "answered": answered, "lost": len(reqs) - answered,
        "not_ok": Counter(f"{r.status}: {(r.error or '')[:120]}" for r in res if r.status != "ok"),
        "paid_twice": sum(c - 1 for c in paid.values()),
    }
    if len(steady) > 1:
        rate = 60.0 * (len(steady) - 1) / (steady[-1] - steady[0])
        out["achieved_rpm_steady"] = round(rate, 1)  # requests burst+1 .. last
        out["achieved_over_limit_steady"] = round(rate / args.rpm, 4)
        out["steady_window_s"] = round(steady[-1] - steady[0], 1)
    if stats:
        out["pool"] = {"actors": stats["actors"], "per_actor": stats["per_actor"],
                       "limiter_calls": stats["limiter"]["calls"]}
    return out


CHILD = """
import json, sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from bench_llm import selection_requests, cfg_for, ray_up, stage_actors
from selectllm.errors import UserError
from selectllm.llm.client import run_requests
a = json.loads(sys.argv[1])
if a["engine"] == "ray":
    ray_up(a.get("ray_address"))
reqs = selection_requests(a["n"], a["tag"])
try:
    pool = {"actors": stage_actors(cfg_for(**a["cfg"]), len(reqs))} if a["engine"] == "ray" else {}
    run_requests(reqs, cfg_for(**a["cfg"]), a["cache"], base_url=a["base"], progress=False, engine=a["engine"], **pool)
except UserError as e:
    print("error:", e, file=sys.stderr)
    sys.exit(2)
"""


def bench_kill(args) -> dict:
    from selectllm.llm.client import run_requests

    n = args.kill_requests
    cfg = {"rpm": 6000, "concurrency": args.concurrency}
    reqs = selection_requests(n, "kill")
    out: dict = {"requests": n, "latency_ms": args.latency_ms, "concurrency": args.concurrency, "variants": {}}
    # the reference: one uninterrupted run (its own simulator and cache)
    with start_simulator(SimulatorConfig(latency_ms=args.latency_ms)) as sim:
        ref_dir = tempfile.mkdtemp(prefix="bench-llm-ref-")
        t0 = time.monotonic()
        ref = run_requests(reqs, cfg_for(**cfg), ref_dir, base_url=sim.base_url, progress=False, engine="local")
        out["reference_seconds"] = round(time.monotonic() - t0, 1)
    ref_picks = picks(ref, reqs)
    script = Path(tempfile.mkdtemp(prefix="bench-llm-child-")) / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), bench=str(Path(__file__).resolve().parent)))
    variants = [v for v in args.kill_variants.split(",") if v]
    for variant in variants:
        engine, signame = variant.split("-")
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-llm-kill-{variant}-"))
        log, cache = tmp / "sim.jsonl", str(tmp / "cache")
        if engine == "ray":
            ray_up(args.ray_address)
        with start_simulator(SimulatorConfig(latency_ms=args.latency_ms), str(log)) as sim:
            arg = {"n": n, "tag": "kill", "cfg": cfg, "cache": cache, "base": sim.base_url, "engine": engine,
                   "ray_address": args.ray_address}
            t0 = time.monotonic()
            proc = subprocess.Popen([sys.executable, str(script), json.dumps(arg)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            try:
                while len(AnswerCache(cache)) < n // 2 and proc.poll() is None:
                    time.sleep(0.05)
                at_kill = len(AnswerCache(cache))
                proc.send_signal(getattr(signal, signame))
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
            first_s = time.monotonic() - t0
            time.sleep(args.latency_ms / 1000.0 + 1.0)  # requests in flight at a SIGKILL still finish (and bill)
            stored = len(AnswerCache(cache))
            paid_before = Counter(x["key"] for x in read_log(log) if x["status"] == 200)
            t0 = time.monotonic()
            pool = {"actors": stage_actors(cfg_for(**cfg), n)} if engine == "ray" else {}
            res = run_requests(reqs, cfg_for(**cfg), cache, base_url=sim.base_url, progress=False, engine=engine, **pool)
            rerun_s = time.monotonic() - t0
        paid = Counter(x["key"] for x in read_log(log) if x["status"] == 200)
        out["variants"][variant] = {
            "stored_when_signalled": at_kill, "stored_after_exit": stored, "exit_code": proc.returncode,
            "stderr_last_line": (err.strip().splitlines() or [""])[-1][:200],
            "paid_before_kill": sum(paid_before.values()), "lost_in_flight": sum(paid_before.values()) - stored,
            "rerun_sent": sum(paid.values()) - sum(paid_before.values()),
            "rerun_cached": sum(1 for r in res if r.cached),
            "duplicate_paid_requests": sum(c - 1 for c in paid.values()),
            "all_answered": all(r.status == "ok" for r in res) and set(paid) == {r.key for r in reqs},
            "same_selection": picks(res, reqs) == ref_picks,
            "first_run_s": round(first_s, 1), "rerun_s": round(rerun_s, 1),
        }
    return out


def bench_budget(args) -> dict:
    from selectllm.llm.ray_pool import RayLLMPool

    rng = random.Random(args.seed)
    cfg = cfg_for(rpm=60_000, concurrency=args.concurrency)
    tmp = Path(tempfile.mkdtemp(prefix="bench-llm-budget-"))
    ratios, token_diffs, usd_diffs, stopped_runs, limiter_diffs = [], [], [], 0, []
    runs = []
    ray_up(args.ray_address)
    t0 = time.monotonic()
    sim_cfg = SimulatorConfig(latency_ms=5, error_rate=0.05, malformed_rate=0.05, seed=args.seed)
    with start_simulator(sim_cfg) as sim, RayLLMPool(cfg, str(tmp / "cache"), api_key="sk-bench",
                                                     base_url=sim.base_url, retry_base_s=0.01,
                                                     actors=stage_actors(cfg, 8 * cfg.concurrency)) as pool:
        for i in range(args.budget_runs):
            n = rng.randint(5, 30)
            mt = rng.choice([4, 16, 64])  # 4 tokens: some answers are cut and retried with 8
            reqs = selection_requests(n, f"budget{i}", max_tokens=mt, seed=args.seed)
            worst = sum(max_request_cost(count_message_tokens(r.messages, MODEL), 2 * mt, PRICE) for r in reqs)
            cap = rng.uniform(0.0, 1.2) * worst
            prior = rng.uniform(0.0, cap) if rng.random() < 0.3 else 0.0
            pool.set_budget(cap, prior)
            before = sim.stats()
            stats: dict = {}
            res = pool.run(reqs, progress=False, stats=stats)
            after = sim.stats()
            spend = sum(r.usd for r in res if not r.cached)
            d_in = after["prompt_tokens"] - before["prompt_tokens"]
            d_out = after["completion_tokens"] - before["completion_tokens"]
            c_in = sum(r.input_tokens for r in res if not r.cached)
            c_out = sum(r.output_tokens for r in res if not r.cached)
            ratios.append((prior + spend) / cap if cap > 0 else (0.0 if spend == 0 else float("inf")))
            token_diffs.append(abs(c_in - d_in) + abs(c_out - d_out))
            usd_diffs.append(abs(spend - cost_usd(d_in, d_out, PRICE)))
            limiter_diffs.append(abs(stats["limiter"]["spent"] - (prior + spend)))
            stopped = sum(1 for r in res if r.status == "budget_stopped")
            stopped_runs += stopped > 0
            runs.append({"n": n, "cap": cap, "prior": prior, "spend": spend, "stopped": stopped,
                         "sent": after["requests"] - before["requests"]})
    return {
        "runs": args.budget_runs, "seconds": round(time.monotonic() - t0, 1),
        "requests": sum(r["n"] for r in runs), "http_requests": sum(r["sent"] for r in runs),
        "runs_with_budget_stops": stopped_runs,
        "max_spend_over_cap": max(ratios), "mean_spend_over_cap": sum(ratios) / len(ratios),
        "max_token_diff_client_vs_simulator": max(token_diffs),
        "max_usd_diff_client_vs_simulator": max(usd_diffs),
        "max_usd_diff_limiter_vs_results": max(limiter_diffs),
        "never_over_cap": all(x <= 1.0 for x in ratios),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="rpm,kill,budget")
    p.add_argument("--engine", choices=["ray", "local"], default="ray", help="rpm section")
    p.add_argument("--rpm", type=int, default=600)
    p.add_argument("--latency-ms", type=float, default=300.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rpm-requests", type=int, default=700)
    p.add_argument("--kill-requests", type=int, default=300)
    p.add_argument("--kill-variants", default="ray-SIGTERM,local-SIGTERM,local-SIGKILL")
    p.add_argument("--budget-runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray-address", default=None, help="default: a fresh local Ray")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    result: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    t0 = time.monotonic()
    for section in args.sections.split(","):
        fn = {"rpm": bench_rpm, "kill": bench_kill, "budget": bench_budget}[section]
        result[section] = fn(args)
        print(json.dumps({section: result[section]}), file=sys.stderr, flush=True)
    result["seconds"] = round(time.monotonic() - t0, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
