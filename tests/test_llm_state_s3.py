"""All LLM state on the run directory's filesystem: a select run on s3:// (moto on 127.0.0.1)
killed with SIGKILL, resumed by another process from another working directory with an empty
HOME, pays for nothing twice and counts the earlier spend against llm.max_usd; online and batch.

The upstream stages are written directly (their declared schemas and manifest entries), so the
subject is only the select stage; the LLM server is the project's simulator started by the test
(it outlives the killed run and counts what is paid).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import s3_server
from selectllm.config import SimulatorConfig
from selectllm.llm.cache import ENDPOINTS_FILE
from selectllm.llm.simulator import start_simulator

from helpers import CLUSTERS, PER_CLUSTER, llm_cfg, make_requests, plant_upstream

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.jsonl"
PRICE = {"input_per_mtok": 0.15, "output_per_mtok": 0.60}


def write_config(where: Path, run_dir: str, base_url: str, **llm) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    cfg = {"run_dir": run_dir, "input": {"paths": [str(SAMPLE)]},
           "select": {"strategy": "selectllm", "budget": CLUSTERS, "candidates_per_prompt": PER_CLUSTER},
           "llm": {"provider": "simulator", "base_url": base_url, "engine": "local", "concurrency": 2,
                   "price": PRICE, **llm}}
    p = where / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def select_process(s3, cwd: Path, home: Path, config: Path, *args: str) -> subprocess.Popen:
    """`selectllm select` in its own working directory and HOME (caches pointed there too)."""
    home.mkdir(parents=True, exist_ok=True)
    env = s3_server.client_env(s3)
    env.update({"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "SELECTLLM_CACHE": str(home / "sl"),
                "PYTHONPATH": str(ROOT),
                # a fresh temp folder, short: Ray's socket paths under it must fit in 107 bytes
                "TMPDIR": tempfile.mkdtemp(prefix="slt", dir="/tmp")})
    return subprocess.Popen([sys.executable, "-m", "selectllm.cli", *args, str(config)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def estimate(s3, config: Path) -> dict:
    """`selectllm estimate` on the planted upstream, in its own process: a client of the S3 server
    from the start (the test session's Ray workers were started without its credentials)."""
    env = s3_server.client_env(s3)
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "selectllm.cli", "estimate", str(config)], cwd=config.parent,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def wait_for(cond, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.1)


def cache_keys(fs, root: str) -> list[str]:
    try:
        return [p for p in fs.find(f"{root}/cache/llm")
                if p.endswith(".json") and "/batches/" not in p and not p.endswith(f"/{ENDPOINTS_FILE}")]
    except FileNotFoundError:
        return []


def local_files(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs for p in d.rglob("*") if p.is_file())


def paid(log: Path) -> Counter:
    """Paid requests per key at the server (online 200 answers)."""
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return Counter(x["key"] for x in lines if x.get("status") == 200 and x.get("key"))


def planted(s3, name: str) -> tuple:
    """An s3 run directory whose dedup, embed and cluster stages are committed: (fs, root, run_dir)."""
    fs, root = s3.fs(), f"{s3.bucket()}/runs/{name}"
    plant_upstream(fs, root)
    return fs, root, f"s3://{root}"


def test_select_killed_on_s3_resumes_elsewhere_pays_nothing_twice_within_the_cap(s3_env, tmp_path):
    s3 = s3_env
    fs, root, run_dir = planted(s3, "r1")
    log = tmp_path / "server.jsonl"
    with start_simulator(SimulatorConfig(latency_ms=400), str(log)) as sim:
        # the cap: 45% of the worst case of all requests (what `selectllm estimate` prints)
        est = estimate(s3, write_config(tmp_path / "est", run_dir, sim.base_url, max_usd=100.0))
        assert est["prompts"] == CLUSTERS and est["cached_prompts"] == 0
        cap = round(0.45 * est["max_usd"], 8)

        a, b = tmp_path / "a", tmp_path / "b"
        proc = select_process(s3, a, tmp_path / "home_a", write_config(a, run_dir, sim.base_url, max_usd=cap),
                              "select")
        try:
            wait_for(lambda: len(cache_keys(fs, root)) >= 8 or proc.poll() is not None)
            proc.kill()  # SIGKILL: no cleanup of any kind
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        before = len(cache_keys(fs, root))
        assert 8 <= before < CLUSTERS // 2, err[-3000:]  # killed mid-way, before the cap
        assert local_files(a) == [str(a / "cfg.yaml")]  # nothing of the run's state on the local disk
        prior_usd = sum(json.loads(fs.cat(p))["usd"] for p in cache_keys(fs, root))

        proc = select_process(s3, b, tmp_path / "home_b", write_config(b, run_dir, sim.base_url, max_usd=cap),
                              "select")
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    assert local_files(b) == [str(b / "cfg.yaml")]
    assert not (tmp_path / "home_b" / "sl").exists()

    # nothing paid twice but what was in flight at the SIGKILL (at most llm.concurrency)
    per_key = paid(log)
    assert sum(c - 1 for c in per_key.values()) <= 2

    with fs.open(f"{root}/select/decisions.parquet", "rb") as f:
        decisions = pq.read_table(f).to_pylist()
    ok = [d for d in decisions if d["status"] == "ok"]
    stopped = [d for d in decisions if d["status"] == "budget_stopped"]
    assert len(decisions) == CLUSTERS and len(ok) + len(stopped) == CLUSTERS
    assert stopped  # the cap was reached ...
    assert sum(d["usd"] for d in ok) <= cap  # ... counting the answers bought before the kill

    # the request log streamed to S3: one line per request, the earlier answers read from the cache
    lines = [json.loads(x) for x in fs.cat(f"{root}/select/requests.jsonl").decode().splitlines()]
    assert len(lines) == CLUSTERS
    ok_keys = {x["key"] for x in lines if x["status"] == "ok"}
    assert len(ok_keys) == len(ok) and ok_keys <= set(per_key)  # paid once each ...
    assert len(set(per_key) - ok_keys) <= 2  # ... and only what was in flight at the kill is unused
    assert sum(x["cached"] for x in lines) == before
    new_usd = sum(x["usd"] for x in lines if not x["cached"])
    assert new_usd <= cap - prior_usd + 1e-12
    manifest = json.loads(fs.cat(f"{root}/manifest.json"))
    assert manifest["stages"]["select"]["status"] == "complete"
    text = "\n".join([out, err] + [fs.cat(p).decode(errors="replace") for p in fs.find(root) if p.endswith((".json", ".jsonl", ".yaml"))])
    assert s3_server.SECRET not in text


@pytest.mark.parametrize("capped", [False, True])
def test_batch_select_killed_on_s3_polls_the_same_batch_elsewhere(s3_env, tmp_path, capped):
    """Killed while its batch runs; the rerun elsewhere polls that batch (creates none for its
    requests) and, with a cap that the first batch half fills, counts its cost before buying more."""
    s3 = s3_env
    fs, root, run_dir = planted(s3, "b1")
    log = tmp_path / "server.jsonl"
    llm = {"mode": "batch", "batch_poll_s": 0.3, "max_usd": 5.0}
    if capped:  # the worst case of 60% of the requests at the batch price: the first batch holds ~24 of 40
        est = estimate(s3, write_config(tmp_path / "est", run_dir, "http://x/v1"))
        llm["max_usd"] = round(0.6 * 0.5 * est["max_usd"], 8)
    with start_simulator(SimulatorConfig(latency_ms=0), str(log), batch_delay_s=4.0) as sim:
        a, b = tmp_path / "a", tmp_path / "b"
        proc = select_process(s3, a, tmp_path / "home_a", write_config(a, run_dir, sim.base_url, **llm), "select")

        def batch_records() -> list[dict]:
            try:
                return [json.loads(fs.cat(p)) for p in fs.find(f"{root}/cache/llm/batches") if p.endswith(".json")]
            except FileNotFoundError:
                return []

        try:
            wait_for(lambda: any(r.get("batch_id") for r in batch_records()) or proc.poll() is not None)
            proc.kill()  # while the batch runs on the server
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        (rec,) = batch_records()
        assert rec["batch_id"] and rec["state"] == "created" and sim.stats()["batch"]["batches"] == 1
        assert not cache_keys(fs, root) and local_files(a) == [str(a / "cfg.yaml")]

        proc = select_process(s3, b, tmp_path / "home_b", write_config(b, run_dir, sim.base_url, **llm), "select")
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        st = sim.stats()
    from selectllm.config import PriceConfig
    from selectllm.llm.budget import cost_usd

    assert st["requests"] == 0  # nothing online
    lines = Counter(json.loads(x)["custom_id"] for x in log.read_text().splitlines() if '"batch"' in x)
    assert max(lines.values()) == 1  # no request in two batches: the killed run's batch was polled
    records = sorted(batch_records(), key=lambda r: r["created"])
    assert records[0]["batch_id"] == rec["batch_id"] and all(r["state"] == "done" for r in records)
    assert set(rec["keys"]) <= set(lines)
    assert local_files(b) == [str(b / "cfg.yaml")]
    with fs.open(f"{root}/select/decisions.parquet", "rb") as f:
        decisions = pq.read_table(f).to_pylist()
    usd = sum(d["usd"] for d in decisions)  # every batch line, billed at the batch price
    assert usd == pytest.approx(0.5 * cost_usd(st["batch"]["prompt_tokens"], st["batch"]["completion_tokens"],
                                               PriceConfig(**PRICE)))
    ok = [d for d in decisions if d["status"] == "ok"]
    assert len(cache_keys(fs, root)) == len(ok) == sum(lines.values())
    if not capped:
        assert st["batch"]["batches"] == 1 and len(ok) == CLUSTERS
    else:  # the first batch's cost counted: the rerun bought only what still fitted under the cap
        # the first batch: the requests whose worst case fits 60% of the whole (about 24 of 40:
        # prompts differ in length); later rounds: what still fits
        first = len(rec["keys"])
        assert 20 <= first < 28 and st["batch"]["batches"] >= 2
        assert CLUSTERS > len(ok) > first and usd <= llm["max_usd"]
        assert {d["status"] for d in decisions} == {"ok", "budget_stopped"}


def test_cache_load_is_one_listing_and_concurrent_reads(tmp_path):
    """Resume reads: one find() of the folder, then reads in flight together (a barrier that only
    opens when 4 reads wait at once), and only for the keys present."""
    from selectllm.llm.cache import AnswerCache

    cache = AnswerCache(str(tmp_path / "c"))
    keys = [f"{i:064x}" for i in range(40)]
    for k in keys[:20]:
        cache.put(k, {"key": k, "usd": 1.0})
    calls = Counter()
    barrier = threading.Barrier(4, timeout=30)
    real_find, real_read = cache.fs.find, cache._read

    def find(path, *a, **kw):
        calls["find"] += 1
        return real_find(path, *a, **kw)

    def read(path):
        calls["read"] += 1
        if calls["read"] <= 4:
            barrier.wait()  # raises BrokenBarrierError unless 4 reads are in flight together
        return real_read(path)

    cache.fs.find = find
    cache._read = read
    got = cache.load(keys[10:] + ["f" * 64])
    assert sorted(got) == keys[10:20] and all(got[k]["key"] == k for k in got)
    assert calls == Counter(find=1, read=10)


def test_simulator_log_and_request_log_go_to_s3(s3_env):
    from selectllm.llm.records import RequestsLog
    from selectllm.llm.client import run_requests

    fs = s3_env.fs()
    bucket = s3_env.bucket()
    log = RequestsLog(f"s3://{bucket}/r/select/requests.jsonl")
    for i in range(3):
        log.write({"key": str(i)})
    log.close()
    assert [json.loads(x)["key"] for x in fs.cat(f"{bucket}/r/select/requests.jsonl").decode().splitlines()] == \
        ["0", "1", "2"]

    reqs = make_requests(3, "s3log")
    with start_simulator(SimulatorConfig(latency_ms=0), f"s3://{bucket}/r/logs/simulator.jsonl") as sim:
        res = run_requests(reqs, llm_cfg(), f"s3://{bucket}/r/cache/llm", base_url=sim.base_url, progress=False,
                           engine="local")
    assert all(r.status == "ok" for r in res)
    lines = [json.loads(x) for x in fs.cat(f"{bucket}/r/logs/simulator.jsonl").decode().splitlines()]
    assert sorted(x["key"] for x in lines if x.get("key")) == sorted(r.key for r in reqs)
    # one object per answer, and the list of endpoints that answered into the folder
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(f"{bucket}/r/cache/llm")) == sorted(
        [f"{r.key}.json" for r in reqs] + [ENDPOINTS_FILE])
