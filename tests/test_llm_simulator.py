"""The OpenAI-compatible simulator, over real HTTP (a subprocess on a loopback port)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest

from selectllm.config import SimulatorConfig
from selectllm.llm.limiter import parse_duration
from selectllm.llm.simulator import answer_text, candidate_score, rating_score, select_ids, start_simulator
from selectllm.llm.tokens import count_message_tokens, count_text_tokens

MODEL = "gpt-4o-mini"
AUTH = {"Authorization": "Bearer test-key"}


def http(base: str, path: str, body: dict | bytes | None = None, headers: dict | None = None,
         method: str | None = None) -> tuple[int, dict, object]:
    data = None
    hdrs = dict(headers or {})
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    elif isinstance(body, bytes):
        data = body
    req = urllib.request.Request(base + path, data=data, headers=hdrs, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw, status, h = r.read(), r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        raw, status, h = e.read(), e.code, dict(e.headers)
    try:
        payload: object = json.loads(raw)
    except ValueError:
        payload = raw
    return status, {k.lower(): v for k, v in h.items()}, payload


def selection_prompt(texts: list[str], k: int) -> list[dict]:
    cands = "\n".join(f'<candidate id="{i}">\n{t}\n</candidate>' for i, t in enumerate(texts, 1))
    return [{"role": "system", "content": "You choose instructions worth annotating."},
            {"role": "user", "content": f"Candidates:\n{cands}\nSelect exactly {k} instruction(s). "
                                        f"Answer with their ids."}]


TEXTS = [
    "Say hi.",
    "### Instruction: Explain how vaccines train the immune system, with an analogy.",
    "### Instruction: Summarize the passage.\n\n### Input: The Roman empire split in 395 AD into east and west.",
    "Write a poem poem poem poem poem poem.",
]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim") / "requests.jsonl"
    with start_simulator(SimulatorConfig(latency_ms=1), str(log), context_limit=2000,
                         batch_delay_s=0.2) as h:
        h.log_path = log
        yield h


# ---------------------------------------------------------------- pure heuristic


def test_selection_heuristic_is_transparent():
    scores = [candidate_score(t) for t in TEXTS]
    assert scores[2] == max(scores)  # longest + has an input
    assert select_ids(list(enumerate(TEXTS, 1)), 2) == [3, 2]
    assert select_ids([(5, "same"), (2, "same")], 1) == [2]  # ties -> lower id
    msgs = selection_prompt(TEXTS, 2)
    assert answer_text(msgs, None) == "[3], [2]"
    assert json.loads(answer_text(msgs, {"type": "json_object"})) == {"selected": [3, 2]}
    schema = {"type": "json_schema", "json_schema": {"name": "s", "schema": {
        "type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"}}}}}}
    assert json.loads(answer_text(msgs, schema)) == {"ids": [3, 2]}


def test_rating_and_echo_answers():
    assert rating_score("") == 1 and rating_score("w " * 200) == 5
    tail = " instruction from 1 to 5:\n" + "word " * 20  # 25 words after the phrase
    msgs = [{"role": "user", "content": "Rate the following" + tail}]
    assert rating_score(tail) == 3
    assert answer_text(msgs, None) == "Score: 3"
    assert json.loads(answer_text(msgs, {"type": "json_object"})) == {"score": 3}
    assert answer_text([{"role": "user", "content": "tell me a joke"}], None) == "Simulated answer: tell me a joke"


# ---------------------------------------------------------------- over HTTP


def test_usage_matches_shared_token_count(sim):
    msgs = selection_prompt(TEXTS, 2)
    status, headers, body = http(sim.base_url, "/chat/completions",
                                 {"model": MODEL, "messages": msgs, "max_tokens": 50}, AUTH)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == MODEL
    choice = body["choices"][0]
    assert choice["message"]["content"] == "[3], [2]" and choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_message_tokens(msgs, MODEL)
    assert usage["completion_tokens"] == count_text_tokens("[3], [2]", MODEL)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "x-ratelimit-limit-requests" not in headers  # unlimited: no headers


def test_json_mode_and_length_truncation(sim):
    msgs = selection_prompt(TEXTS, 3)
    s, _, body = http(sim.base_url, "/chat/completions", {"model": MODEL, "messages": msgs, "max_tokens": 50,
                                                          "response_format": {"type": "json_object"}}, AUTH)
    assert s == 200 and json.loads(body["choices"][0]["message"]["content"]) == {"selected": [3, 2, 4]}
    s, _, body = http(sim.base_url, "/chat/completions", {"model": MODEL, "messages": msgs,
                                                          "max_completion_tokens": 2}, AUTH)
    assert s == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 2
    assert "[3], [2], [4]".startswith(body["choices"][0]["message"]["content"])


def test_auth_model_and_context_errors(sim):
    msgs = [{"role": "user", "content": "hi"}]
    for hdrs in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        s, _, body = http(sim.base_url, "/chat/completions", {"model": MODEL, "messages": msgs}, hdrs)
        assert s == 401 and body["error"]["code"] == "invalid_api_key"
    s, _, body = http(sim.base_url, "/chat/completions", {"model": "no-such-model", "messages": msgs}, AUTH)
    assert s == 404 and body["error"]["code"] == "model_not_found"
    big = [{"role": "user", "content": "word " * 3000}]  # context limit of this simulator: 2000
    s, _, body = http(sim.base_url, "/chat/completions", {"model": MODEL, "messages": big, "max_tokens": 10}, AUTH)
    assert s == 400 and body["error"]["code"] == "context_length_exceeded"
    s, _, body = http(sim.base_url, "/chat/completions", b"{not json", {**AUTH, "Content-Type": "application/json"})
    assert s == 400


def test_stats_and_request_log(sim):
    before = sim.stats()
    msgs = [{"role": "user", "content": f"echo {uuid.uuid4().hex}"}]
    s, _, body = http(sim.base_url, "/chat/completions", {"model": MODEL, "messages": msgs},
                      {**AUTH, "X-Selectllm-Key": "k123"})
    assert s == 200
    after = sim.stats()
    assert after["requests"] == before["requests"] + 1
    assert after["by_status"]["200"] == before["by_status"].get("200", 0) + 1
    assert after["prompt_tokens"] - before["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert after["completion_tokens"] - before["completion_tokens"] == body["usage"]["completion_tokens"]
    lines = [json.loads(x) for x in sim.log_path.read_text().splitlines()]
    mine = [x for x in lines if x.get("key") == "k123"]
    assert len(mine) == 1 and mine[0]["status"] == 200
    assert mine[0]["prompt_tokens"] == body["usage"]["prompt_tokens"]
    assert all("test-key" not in json.dumps(x) for x in lines)  # never the credential
    assert any(x["status"] == 401 for x in lines)


@pytest.mark.subprocess
def test_rpm_limit_answers_429_with_headers():
    with start_simulator(SimulatorConfig(latency_ms=0, rpm=3, tpm=100_000)) as h:
        msgs = [{"role": "user", "content": "hello"}]
        seen = []
        for _ in range(4):
            seen.append(http(h.base_url, "/chat/completions", {"model": MODEL, "messages": msgs}, AUTH))
        assert [s for s, _, _ in seen] == [200, 200, 200, 429]
        remaining = [int(hd["x-ratelimit-remaining-requests"]) for _, hd, _ in seen]
        assert remaining == [2, 1, 0, 0]
        for _, hd, _ in seen:
            assert hd["x-ratelimit-limit-requests"] == "3" and hd["x-ratelimit-limit-tokens"] == "100000"
            assert 0 < parse_duration(hd["x-ratelimit-reset-requests"]) <= 60
            assert parse_duration(hd["x-ratelimit-reset-tokens"]) is not None
        used = seen[0][2]["usage"]["total_tokens"]
        assert int(seen[0][1]["x-ratelimit-remaining-tokens"]) == 100_000 - used
        _, hd, body = seen[3]
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert 55 <= int(hd["retry-after"]) <= 60
        assert 55_000 <= int(hd["retry-after-ms"]) <= 60_000
        assert h.stats()["by_status"] == {"200": 3, "429": 1}


@pytest.mark.subprocess
def test_tpm_limit_and_request_too_large():
    with start_simulator(SimulatorConfig(latency_ms=0, tpm=100)) as h:
        msgs = [{"role": "user", "content": "hello " * 10}]
        s, hd, first = http(h.base_url, "/chat/completions", {"model": MODEL, "messages": msgs}, AUTH)
        per = first["usage"]["total_tokens"]  # a request is charged prompt + completion
        assert s == 200 and int(hd["x-ratelimit-remaining-tokens"]) == 100 - per
        fit = 100 // per
        codes = [http(h.base_url, "/chat/completions", {"model": MODEL, "messages": msgs}, AUTH)[0]
                 for _ in range(fit)]
        assert codes == [200] * (fit - 1) + [429]
        s, hd, body = http(h.base_url, "/chat/completions",
                           {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 200}]}, AUTH)
        assert s == 429 and body["error"]["code"] == "request_too_large" and "retry-after" not in hd


@pytest.mark.subprocess
def test_errors_and_malformed_are_deterministic_per_attempt():
    cfg = SimulatorConfig(latency_ms=0, error_rate=0.5, malformed_rate=0.5, seed=3)
    outcomes = []
    for _ in range(2):  # two fresh servers, same seed: same sequence
        with start_simulator(cfg) as h:
            msgs = selection_prompt(TEXTS, 1)
            seq = []
            for _ in range(12):
                s, _, body = http(h.base_url, "/chat/completions", {"model": MODEL, "messages": msgs}, AUTH)
                seq.append(s if s != 200 else body["choices"][0]["message"]["content"])
            outcomes.append(seq)
            st = h.stats()
            assert st["malformed"] == sum(1 for x in seq if isinstance(x, str) and "[" not in x)
    assert outcomes[0] == outcomes[1]
    seq = outcomes[0]
    assert any(x in (500, 503) for x in seq) and "[3]" in seq  # a retried body can succeed
    assert any(isinstance(x, str) and "[" not in x and not any(c.isdigit() for c in x) for x in seq)


def test_batch_api_roundtrip(sim):
    lines = []
    for i in range(3):
        lines.append({"custom_id": f"g{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"model": MODEL, "messages": selection_prompt(TEXTS[i:], 1), "max_tokens": 20}})
    lines.append({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}})
    payload = "".join(json.dumps(x) + "\n" for x in lines).encode()
    boundary = "----selectllmtest"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
            f"Content-Type: application/jsonl\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    s, _, f = http(sim.base_url, "/files", form, {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert s == 200 and f["purpose"] == "batch" and f["bytes"] == len(payload)
    s, _, b = http(sim.base_url, "/batches", {"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                              "completion_window": "24h"}, AUTH)
    assert s == 200 and b["status"] == "validating"
    deadline = time.monotonic() + 10
    while b["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
        _, _, b = http(sim.base_url, f"/batches/{b['id']}", headers=AUTH)
    assert b["status"] == "completed" and b["request_counts"] == {"total": 4, "completed": 3, "failed": 1}
    s, _, out = http(sim.base_url, f"/files/{b['output_file_id']}/content", headers=AUTH)
    rows = [json.loads(x) for x in out.decode().splitlines()] if isinstance(out, bytes) else [out]
    assert [r["custom_id"] for r in rows] == ["g0", "g1", "g2"]
    assert rows[0]["response"]["status_code"] == 200
    assert rows[0]["response"]["body"]["choices"][0]["message"]["content"] == "[3]"
    assert rows[0]["response"]["body"]["usage"]["prompt_tokens"] == count_message_tokens(
        lines[0]["body"]["messages"], MODEL)
    s, _, err = http(sim.base_url, f"/files/{b['error_file_id']}/content", headers=AUTH)
    err_rows = [json.loads(x) for x in (err.decode() if isinstance(err, bytes) else json.dumps(err)).splitlines()]
    assert err_rows[0]["custom_id"] == "bad" and err_rows[0]["response"]["status_code"] == 404
    assert http(sim.base_url, "/batches/nope", headers=AUTH)[0] == 404
    assert http(sim.base_url, "/files", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})[0] == 401


@pytest.mark.subprocess
def test_cli_port_file(tmp_path):
    import subprocess
    import sys

    pf = tmp_path / "port"
    p = subprocess.Popen([sys.executable, "-m", "selectllm.llm.simulator", "--port", "0", "--port-file", str(pf),
                          "--rpm", "5", "--latency-ms", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not pf.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{int(pf.read_text())}/v1"
        s, hd, _ = http(base, "/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                        AUTH)
        assert s == 200 and hd["x-ratelimit-limit-requests"] == "5"
    finally:
        p.terminate()
        p.wait(timeout=10)
