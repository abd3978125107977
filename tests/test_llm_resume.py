"""Kill a run mid-way and run it again: nothing paid twice (online and Batch API); batch budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from selectllm.config import SimulatorConfig
from selectllm.llm import batch as batch_mod
from selectllm.llm.budget import cost_usd
from selectllm.llm.cache import AnswerCache
from selectllm.llm.client import run_requests
from selectllm.llm.simulator import answer_text, start_simulator
from selectllm.llm.tokens import count_message_tokens

from helpers import MODEL, PRICE, llm_cfg, make_requests, SCHEMA

pytestmark = pytest.mark.subprocess  # the simulator, and the runs it kills

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from helpers import make_requests, llm_cfg, SCHEMA
from selectllm.errors import UserError
from selectllm.llm.client import run_requests
args = json.loads(sys.argv[1])
reqs = make_requests(args["n"], args["tag"], rf=SCHEMA, k=2)
cfg = llm_cfg(**args["cfg"])
try:  # as the CLI does: a UserError is one line and exit code 2
    res = run_requests(reqs, cfg, args["cache"], base_url=args["base"], progress=False, engine="local",
                       **args.get("kw", {{}}))
except UserError as e:
    print(f"error: {{e}}", file=sys.stderr)
    sys.exit(2)
print(json.dumps([r.status for r in res]))
"""


def start_run(tmp_path: Path, base: str, cache: str, n: int, tag: str, cfg: dict, kw: dict | None = None):
    script = tmp_path / "run_llm.py"
    script.write_text(SCRIPT.format(tests=str(TESTS)))
    arg = json.dumps({"n": n, "tag": tag, "cfg": cfg, "cache": cache, "base": base, "kw": kw or {}})
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    return subprocess.Popen([sys.executable, str(script), arg], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for(cond, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def paid_per_key(log: Path) -> Counter:
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return Counter(x.get("key") or x.get("custom_id") for x in lines
                   if x.get("status") == 200 and (x.get("key") or x.get("custom_id")))


def expected(reqs) -> list[str]:
    return [answer_text(r.messages, r.response_format) for r in reqs]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_kill_mid_run_then_rerun_pays_nothing_twice(tmp_path, sig):
    log = tmp_path / "sim.jsonl"
    cache = str(tmp_path / "cache")
    n, conc = 32, 4
    cfg = {"concurrency": conc}
    with start_simulator(SimulatorConfig(latency_ms=150), str(log)) as sim:
        proc = start_run(tmp_path, sim.base_url, cache, n, "kill", cfg)
        try:
            wait_for(lambda: len(AnswerCache(cache)) >= 8)
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        stored = len(AnswerCache(cache))
        assert 8 <= stored < n  # killed mid-way
        if sig == signal.SIGTERM:  # graceful: in-flight requests finished and stored, one line, exit != 0
            assert proc.returncode == 2 and "interrupted by SIGTERM" in err and "Traceback" not in err
        reqs = make_requests(n, "kill", rf=SCHEMA, k=2)
        res = run_requests(reqs, llm_cfg(**cfg), cache, base_url=sim.base_url, progress=False, engine="local")
    assert all(r.status == "ok" for r in res)
    assert sum(r.cached for r in res) >= stored
    assert [r.text for r in res] == expected(reqs)  # the same final answers as an uninterrupted run
    paid = paid_per_key(log)
    assert set(paid) == {r.key for r in reqs}
    dup = sum(c - 1 for c in paid.values())
    if sig == signal.SIGTERM:
        assert dup == 0
    else:  # SIGKILL: only the requests in flight at the kill can be lost, hence paid again
        assert dup <= conc


def test_batch_killed_after_create_resumes_the_same_batch(tmp_path):
    log = tmp_path / "sim.jsonl"
    cache = str(tmp_path / "cache")
    n = 20
    cfg = {"mode": "batch", "batch_poll_s": 0.2}
    with start_simulator(SimulatorConfig(latency_ms=0), str(log), batch_delay_s=2.0) as sim:
        proc = start_run(tmp_path, sim.base_url, cache, n, "bkill", cfg)
        recs = lambda: batch_mod._Records(cache).all()  # noqa: E731
        try:
            wait_for(lambda: any(r.get("batch_id") for r in recs()))
            proc.kill()  # SIGKILL while the batch runs on the server
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert len(AnswerCache(cache)) == 0 and sim.stats()["batch"]["batches"] == 1
        (bid,) = [r["batch_id"] for r in recs()]
        reqs = make_requests(n, "bkill", rf=SCHEMA, k=2)
        res = run_requests(reqs, llm_cfg(**cfg), cache, base_url=sim.base_url, progress=False)
        st = sim.stats()
        assert st["batch"]["batches"] == 1 and st["requests"] == 0  # polled the old batch, created none
        assert [r["state"] for r in recs()] == ["done"] and recs()[0]["batch_id"] == bid
        assert all(r.status == "ok" and not r.cached for r in res) and [r.text for r in res] == expected(reqs)
        # accounting at the batch price, to the token
        assert sum(r.input_tokens for r in res) == st["batch"]["prompt_tokens"]
        assert sum(r.output_tokens for r in res) == st["batch"]["completion_tokens"]
        assert sum(r.usd for r in res) == pytest.approx(
            0.5 * cost_usd(st["batch"]["prompt_tokens"], st["batch"]["completion_tokens"], PRICE))
        again = run_requests(reqs, llm_cfg(**cfg), cache, base_url=sim.base_url, progress=False)
        assert all(r.cached for r in again) and sim.stats()["batch"]["batches"] == 1
    assert max(paid_per_key(log).values()) == 1


def test_batch_killed_between_create_and_record_is_found_by_input_file(tmp_path, monkeypatch):
    cache = str(tmp_path / "cache")
    reqs = make_requests(6, "orphan", rf=SCHEMA, k=2)
    cfg = llm_cfg(mode="batch", batch_poll_s=0.1)
    real_put = batch_mod._Records.put

    def dying_put(self, rec):
        if rec["state"] == "created":
            raise KeyboardInterrupt  # the process dies right after batches.create
        real_put(self, rec)

    with start_simulator(SimulatorConfig(latency_ms=0), batch_delay_s=0.3) as sim:
        monkeypatch.setattr(batch_mod._Records, "put", dying_put)
        with pytest.raises(KeyboardInterrupt):
            run_requests(reqs, cfg, cache, base_url=sim.base_url, progress=False)
        monkeypatch.setattr(batch_mod._Records, "put", real_put)
        assert [r["state"] for r in batch_mod._Records(cache).all()] == ["creating"]
        res = run_requests(reqs, cfg, cache, base_url=sim.base_url, progress=False)
        assert sim.stats()["batch"]["batches"] == 1  # adopted, not created again
    assert all(r.status == "ok" for r in res) and [r.text for r in res] == expected(reqs)


def test_batch_budget_and_length_retry(tmp_path):
    cache = str(tmp_path / "cache")
    reqs = make_requests(20, "bbud", max_tokens=20)
    one = 0.5 * cost_usd(count_message_tokens(reqs[0].messages, MODEL), 20, PRICE)  # batch price
    cap = one * 8.5
    long = make_requests(1, "blen", max_tokens=1, k=3)  # "[4], [3], [2]" needs more than 2 tokens
    with start_simulator(SimulatorConfig(latency_ms=0), batch_delay_s=0.1) as sim:
        res = run_requests(long + reqs, llm_cfg(mode="batch", batch_poll_s=0.05, max_usd=cap), cache,
                           base_url=sim.base_url, progress=False)
        st = sim.stats()["batch"]
    ok = [r for r in res if r.status == "ok"]
    stopped = [r for r in res if r.status == "budget_stopped"]
    assert ok and stopped and len(ok) + len(stopped) == 21
    assert sum(r.usd for r in res) <= cap
    assert sum(r.input_tokens for r in res) == st["prompt_tokens"]
    assert sum(r.output_tokens for r in res) == st["completion_tokens"]
    assert res[0].status == "ok" and res[0].finish_reason == "length" and res[0].attempts == 2
    assert st["batches"] >= 2 and st["lines"] == sum(r.attempts for r in ok)  # the length retry: a 2nd batch
