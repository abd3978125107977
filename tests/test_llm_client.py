"""The LLM client against a real simulator subprocess over HTTP (and a scripted fake server)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from selectllm.config import SimulatorConfig
from selectllm.errors import UserError
from selectllm.llm.budget import cost_usd
from selectllm.llm.client import llm_endpoint, run_requests
from selectllm.llm.simulator import start_simulator
from selectllm.llm.tokens import count_message_tokens
from selectllm.llm.types import LLMRequest

from helpers import FASTAPI_422, FakeServer, MODEL, PRICE, SCHEMA, completion, error, llm_cfg, make_requests, with_text_form


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in ("requests", "prompt_tokens", "completion_tokens")}


@pytest.fixture(scope="module")
def sim():
    with start_simulator(SimulatorConfig(latency_ms=2), context_limit=3000) as h:
        yield h


# ---------------------------------------------------------------- happy path, cache, accounting


def test_ordered_results_cache_and_exact_accounting(sim, tmp_path):
    reqs = make_requests(40, "a", rf=SCHEMA)
    cfg = llm_cfg()
    before = sim.stats()
    log = tmp_path / "select" / "requests.jsonl"
    res = run_requests(reqs, cfg, str(tmp_path / "cache"), str(log), base_url=sim.base_url, progress=False)
    after = sim.stats()
    assert [r.key for r in res] == [r.key for r in reqs]
    assert [r.group_id for r in res] == list(range(40))
    assert all(r.status == "ok" and not r.cached and r.attempts == 1 for r in res)
    assert all(json.loads(r.text) == {"selected": [4]} for r in res)  # the longest candidate
    d = delta(before, after)
    assert d["requests"] == 40
    assert sum(r.input_tokens for r in res) == d["prompt_tokens"] == sum(
        count_message_tokens(r.messages, MODEL) for r in reqs)
    assert sum(r.output_tokens for r in res) == d["completion_tokens"]
    spend = sum(r.usd for r in res)
    assert spend == pytest.approx(cost_usd(d["prompt_tokens"], d["completion_tokens"], PRICE), rel=1e-9)

    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert sorted(x["key"] for x in lines) == sorted(r.key for r in reqs)
    assert set(lines[0]) >= {"key", "status", "attempts", "cached", "input_tokens", "output_tokens", "usd"}

    # rerun: every answer comes from the cache, nothing is sent
    before = sim.stats()
    res2 = run_requests(reqs, cfg, str(tmp_path / "cache"), str(log), base_url=sim.base_url, progress=False)
    assert delta(before, sim.stats())["requests"] == 0
    assert all(r.cached and r.status == "ok" and r.attempts == 0 for r in res2)
    assert [r.text for r in res2] == [r.text for r in res]
    assert [r.usd for r in res2] == [r.usd for r in res]  # what the answer cost when bought
    assert len(log.read_text().splitlines()) == 80


def test_same_key_twice_in_one_call_is_sent_once(sim, tmp_path):
    reqs = make_requests(3, "dup")
    twice = reqs + [reqs[1]]
    before = sim.stats()
    res = run_requests(twice, llm_cfg(concurrency=4), str(tmp_path), base_url=sim.base_url, progress=False)
    assert delta(before, sim.stats())["requests"] == 3
    assert res[3].text == res[1].text and res[3].cached and res[3].status == "ok"


def test_structured_output_off_sends_plain_text(sim, tmp_path):
    res = run_requests(make_requests(2, "plain", rf=SCHEMA), llm_cfg(structured_output="off"), str(tmp_path),
                       base_url=sim.base_url, progress=False)
    assert [r.text for r in res] == ["[4]", "[4]"]


def test_length_gets_one_retry_with_double_max_tokens(sim, tmp_path):
    reqs = make_requests(1, "len", max_tokens=1, k=3)  # "[4], [3], [2]" needs more than 2 tokens
    before = sim.stats()
    (r,) = run_requests(reqs, llm_cfg(), str(tmp_path), base_url=sim.base_url, progress=False)
    d = delta(before, sim.stats())
    assert r.status == "ok" and r.finish_reason == "length" and r.attempts == 2
    assert d["requests"] == 2 and r.output_tokens == d["completion_tokens"] == 1 + 2
    assert r.input_tokens == d["prompt_tokens"]


# ---------------------------------------------------------------- failures


@pytest.mark.subprocess
def test_server_errors_are_retried_until_ok(tmp_path):
    with start_simulator(SimulatorConfig(latency_ms=1, error_rate=0.3, seed=1)) as h:
        reqs = make_requests(30, "err")
        res = run_requests(reqs, llm_cfg(max_retries=10), str(tmp_path), base_url=h.base_url, progress=False,
                           retry_base_s=0.01, seed=0)
        st = h.stats()
    assert all(r.status == "ok" for r in res)
    assert sum(r.attempts for r in res) == st["requests"] > 30
    assert st["by_status"].get("500", 0) + st["by_status"].get("503", 0) == st["requests"] - 30
    assert sum(r.usd for r in res) == pytest.approx(cost_usd(st["prompt_tokens"], st["completion_tokens"], PRICE))


@pytest.mark.subprocess
def test_malformed_answers_come_back_as_text(tmp_path):
    with start_simulator(SimulatorConfig(latency_ms=0, malformed_rate=1.0)) as h:
        res = run_requests(make_requests(5, "mal"), llm_cfg(), str(tmp_path), base_url=h.base_url, progress=False)
    assert all(r.status == "ok" and r.text and not any(c.isdigit() for c in r.text) for r in res)


def test_budget_cap_stops_requests_and_is_never_exceeded(sim, tmp_path):
    reqs = make_requests(40, "budget", max_tokens=20)
    one = cost_usd(count_message_tokens(reqs[0].messages, MODEL), 20, PRICE)  # max cost of one request
    cap = one * 10.5
    before = sim.stats()
    res = run_requests(reqs, llm_cfg(max_usd=cap, concurrency=6), str(tmp_path), base_url=sim.base_url,
                       progress=False)
    d = delta(before, sim.stats())
    stopped = [r for r in res if r.status == "budget_stopped"]
    ok = [r for r in res if r.status == "ok"]
    assert stopped and ok and len(ok) + len(stopped) == 40
    assert len(ok) >= 10  # answers cost less than their maximum, so at least 10 fit
    spend = sum(r.usd for r in res)
    assert spend <= cap
    assert spend == pytest.approx(cost_usd(d["prompt_tokens"], d["completion_tokens"], PRICE))
    assert d["requests"] == len(ok)
    assert all(r.attempts == 0 and r.usd == 0 for r in stopped)


def test_unknown_model_and_context_length_are_per_request_errors(sim, tmp_path):
    (r,) = run_requests(make_requests(1, "m"), llm_cfg(model="no-such-model"), str(tmp_path),
                        base_url=sim.base_url, progress=False)
    assert r.status == "error" and "no-such-model" in r.error and r.attempts == 1
    big = LLMRequest(key="b" * 64, group_id="big", messages=[{"role": "user", "content": "word " * 4000}],
                     max_tokens=10)
    small = make_requests(1, "ctx")[0]
    res = run_requests([big, small], llm_cfg(), str(tmp_path), base_url=sim.base_url, progress=False)
    assert res[0].status == "error" and "context length" in res[0].error and res[0].attempts == 1
    assert "context_length_exceeded, not retried" in res[0].error and "HTTP 400" in res[0].error
    assert res[1].status == "ok"


def test_missing_key_for_openai_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv("SELECTLLM_TEST_KEY", raising=False)
    with pytest.raises(UserError, match="SELECTLLM_TEST_KEY"):
        run_requests(make_requests(1), llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY"),
                     str(tmp_path), base_url="http://127.0.0.1:9/v1", progress=False)


# ---------------------------------------------------------------- scripted fake server


@pytest.mark.parametrize("headers,wait_s", [({"retry-after": "1"}, 1.0), ({"retry-after-ms": "300"}, 0.3),
                                            ({"retry-after": "9", "retry-after-ms": "300"}, 0.3)])
def test_429_retry_after_is_honoured(tmp_path, headers, wait_s):
    """The retry waits what the header says (milliseconds preferred), not the 10 ms backoff."""
    sent: list[float] = []

    async def handler(request, body, n):
        sent.append(time.monotonic())
        if n == 1:
            return error(429, "slow down", code="rate_limit_exceeded", headers=headers)
        return completion()

    with FakeServer(handler) as base:
        (r,) = run_requests(make_requests(1), llm_cfg(), str(tmp_path), base_url=base, progress=False,
                            retry_base_s=0.01)
    assert r.status == "ok" and r.attempts == 2 and sent[1] - sent[0] >= wait_s
    if wait_s < 1:  # the seconds header, when both are sent, is not the one obeyed
        assert sent[1] - sent[0] < 9
    assert r.input_tokens == 10 and r.usd == pytest.approx(cost_usd(10, 2, PRICE))


def test_401_raises_user_error_without_the_key(tmp_path, monkeypatch):
    secret = "sk-very-secret-123456"
    monkeypatch.setenv("SELECTLLM_TEST_KEY", secret)

    async def handler(request, body, n):
        assert request.headers["Authorization"] == f"Bearer {secret}"
        return error(401, f"Incorrect API key provided: {secret}", code="invalid_api_key")

    with FakeServer(handler) as base:
        with pytest.raises(UserError) as ei:
            run_requests(make_requests(5), llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY"),
                         str(tmp_path), base_url=base, progress=False)
    msg = str(ei.value)
    assert "401" in msg and "SELECTLLM_TEST_KEY" in msg and secret not in msg and "\n" not in msg


def structured_run(handler, tmp_path, n: int, tag: str, concurrency: int = 4) -> tuple[FakeServer, list, dict]:
    """``n`` structured requests (with their text form) to an OpenAI-like ``handler``: the server,
    the results, the run's report."""
    srv, report = FakeServer(handler), {}
    with srv as base:
        res = run_requests(with_text_form(make_requests(n, tag, rf=SCHEMA)),
                           llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY", concurrency=concurrency),
                           str(tmp_path), base_url=base, progress=False, report=report)
    return srv, res, report


def test_auto_structured_output_falls_back_once_per_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SELECTLLM_TEST_KEY", "sk-test")

    async def handler(request, body, n):
        if "response_format" in body:
            return error(400, "response_format is not supported by this model", param="response_format")
        return completion("[2]")

    srv = FakeServer(handler)
    with srv as base:
        res = run_requests(make_requests(4, rf=SCHEMA),
                           llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY", concurrency=1),
                           str(tmp_path), base_url=base, progress=False)
    assert all(r.status == "ok" and r.text == "[2]" for r in res)
    # rejected once per rung (json_schema, json_object_schema, json_object; unbilled), then never sent again
    assert [r.attempts for r in res] == [4, 1, 1, 1]
    assert [(b.get("response_format") or {}).get("type") for b in srv.bodies] == [
        "json_schema", "json_object", "json_object", None, None, None, None]
    assert "schema" in srv.bodies[1]["response_format"] and "schema" not in srv.bodies[2]["response_format"]


@pytest.mark.parametrize("how", ["422", "400", "ignored"])
def test_auto_structured_output_probes_once_then_sends_the_text_form(tmp_path, monkeypatch, how):
    """Whether the endpoint rejects response_format (FastAPI's 422, OpenAI's 400) or ignores it
    (plain text to a json_schema request), with 4 slots only one request ever carries it; the
    others wait for that probe, then all go in their text form; the run's report says why."""
    monkeypatch.setenv("SELECTLLM_TEST_KEY", "sk-test")

    async def handler(request, body, n):
        if "response_format" in body and how == "422":
            return web.json_response(FASTAPI_422, status=422)
        if "response_format" in body and how == "400":
            return error(400, "Invalid parameter: 'response_format' of type 'json_schema' is not supported")
        return completion("[2]")

    srv, res, report = structured_run(handler, tmp_path, 12, "probe")
    assert all(r.status == "ok" and r.text == "[2]" for r in res)
    # one probe per rung of the ladder, each alone; then the text form without a response format
    with_rf = [b for b in srv.bodies if "response_format" in b]
    assert [b["response_format"]["type"] for b in with_rf] == ["json_schema", "json_object", "json_object"]
    assert not any(b["messages"][-1]["content"].endswith("Text form.") for b in with_rf)
    rest = [b for b in srv.bodies if "response_format" not in b]
    assert len(rest) == (12 if how != "ignored" else 9)
    assert all(b["messages"][-1]["content"].endswith("Text form.") for b in rest)
    assert report["structured_output"] == "text"
    steps = report["structured_fallback"].split("; ")
    assert [s.split(":")[0] for s in steps] == ["json_schema", "json_object_schema", "json_object"]
    if how == "ignored":
        assert all(s.endswith("it answered plain text") for s in steps)
    else:
        assert all(f"HTTP {how} naming the response format" in s for s in steps)


def test_auto_structured_output_kept_when_the_endpoint_answers_json(tmp_path, monkeypatch):
    monkeypatch.setenv("SELECTLLM_TEST_KEY", "sk-test")

    async def handler(request, body, n):
        return completion('{"selected": [2]}' if n != 5 else "[3]")  # one odd answer changes nothing

    srv, res, report = structured_run(handler, tmp_path, 8, "keep")
    assert all(r.status == "ok" for r in res) and report["structured_fallback"] is None
    assert report["structured_output"] == "json_schema"
    assert all("response_format" in b for b in srv.bodies) and len(srv.bodies) == 8


def test_structured_output_on_does_not_fall_back(tmp_path):
    async def handler(request, body, n):
        return error(400, "response_format is not supported", param="response_format")

    with FakeServer(handler) as base:
        (r,) = run_requests(make_requests(1, rf=SCHEMA), llm_cfg(structured_output="on"), str(tmp_path),
                            base_url=base, progress=False)
    assert r.status == "error" and "response_format" in r.error and r.cause == "format_rejected"


# llama-cpp-python 0.3.36's answer to {"type": "json_schema", ...} (measured): a 500 carrying pydantic's error
LLAMA_CPP_500 = ("1 validation error for CreateChatCompletionRequest\nresponse_format.type\n  Input should be "
                 "'text' or 'json_object' [type=literal_error, input_value='json_schema', input_type=str]")


def llama_cpp_like(bodies_ok: list):
    async def handler(request, body, n):
        rf = body.get("response_format")
        if rf is not None and rf.get("type") not in ("text", "json_object"):
            return web.json_response({"error": {"message": LLAMA_CPP_500, "type": "internal_server_error",
                                                "param": None, "code": None}}, status=500)
        bodies_ok.append(body)
        return completion('{"selected": [2]}' if rf is not None and rf.get("schema") else "[2]")
    return handler


def test_llama_cpp_500_naming_response_format_steps_to_its_json_object_schema_form(tmp_path, monkeypatch):
    """llama-cpp-python answers json_schema with a 500: recognised by what it says, never retried as
    a transient 5xx; the next rung, {"type": "json_object", "schema": ...}, is kept for the run."""
    monkeypatch.setenv("SELECTLLM_TEST_KEY", "sk-test")
    ok: list = []
    srv = FakeServer(llama_cpp_like(ok))
    report: dict = {}
    with srv as base:
        res = run_requests(with_text_form(make_requests(6, "llama", rf=SCHEMA)),
                           llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY", concurrency=3, max_retries=8),
                           str(tmp_path), base_url=base, progress=False, report=report, retry_base_s=0.01)
    assert all(r.status == "ok" and r.text == '{"selected": [2]}' and r.cause is None for r in res)
    assert [r.format for r in res] == ["json_object_schema"] * 6
    assert sum(1 for b in srv.bodies if b["response_format"]["type"] == "json_schema") == 1  # not retried
    assert all(b["response_format"] == {"type": "json_object", "schema": SCHEMA["json_schema"]["schema"]} for b in ok)
    assert report["structured_output"] == "json_object_schema"
    assert report["structured_fallback"].startswith("json_schema: HTTP 500 naming the response format")


def test_fixed_json_schema_against_llama_cpp_is_a_format_rejection_not_a_retry(tmp_path):
    srv = FakeServer(llama_cpp_like([]))
    with srv as base:
        (r,) = run_requests(make_requests(1, rf=SCHEMA), llm_cfg(structured_output="json_schema"), str(tmp_path),
                            base_url=base, progress=False, retry_base_s=0.01)
    assert r.status == "error" and r.cause == "format_rejected" and r.attempts == 1 and len(srv.bodies) == 1
    assert "HTTP 500" in r.error and "structured_output" in r.error


@pytest.mark.parametrize("status,message,code,cause", [
    (500, "upstream crashed", None, "http_5xx"),
    (503, "overloaded", None, "http_5xx"),
    (400, "messages: field required", None, "http_4xx"),
    (400, "This model's maximum context length is 2048 tokens", "context_length_exceeded", "context_length"),
    (429, "slow down", "rate_limit_exceeded", "rate_limited"),
])
def test_each_failure_has_a_cause(tmp_path, status, message, code, cause):
    async def handler(request, body, n):
        return error(status, message, code=code)

    with FakeServer(handler) as base:
        (r,) = run_requests(make_requests(1, rf=SCHEMA), llm_cfg(max_retries=1), str(tmp_path), base_url=base,
                            progress=False, retry_base_s=0.001, retry_cap_s=0.002)
    assert r.status == "error" and r.cause == cause and r.usd == 0
    assert r.attempts == (2 if status in (429, 500, 503) else 1)  # transient ones retried, the rest final


def test_timeout_and_garbage_bodies_have_causes(tmp_path):
    async def slow(request, body, n):
        await asyncio.sleep(2)
        return completion()

    async def garbage(request, body, n):
        return web.Response(text="<html>proxy says hi</html>", content_type="application/json")

    with FakeServer(slow) as base:
        (r,) = run_requests(make_requests(1), llm_cfg(max_retries=0, timeout_s=0.3), str(tmp_path / "a"),
                            base_url=base, progress=False)
    assert r.status == "error" and r.cause == "timeout"
    with FakeServer(garbage) as base:
        (r,) = run_requests(make_requests(1), llm_cfg(max_retries=1), str(tmp_path / "b"), base_url=base,
                            progress=False, retry_base_s=0.001)
    assert r.status == "error" and r.cause == "bad_body" and r.attempts == 2


def reasoning_completion(text: str, completion_tokens: int, reasoning: int, finish: str):
    return web.json_response({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": completion_tokens, "total_tokens": 10 + completion_tokens,
                  "completion_tokens_details": {"reasoning_tokens": reasoning}}})


def test_reasoning_tokens_reported_leave_room_and_an_empty_answer_is_a_failure(tmp_path):
    """An endpoint that reports reasoning tokens and comes back empty at max_tokens: asked again
    with twice the tokens plus llm.reasoning_tokens; still empty -> error 'empty', billed, never
    stored (a rerun asks again); later requests get the room from the start."""
    async def handler(request, body, n):
        mt = body["max_tokens"]
        if mt < 500:  # all of it spent thinking
            return reasoning_completion("", mt, mt, "length")
        return reasoning_completion("[2]", 300, 290, "stop")

    srv = FakeServer(handler)
    cfg = llm_cfg(concurrency=1, reasoning_tokens=600, max_retries=0)
    with srv as base:
        res = run_requests(make_requests(2, "think", max_tokens=16), cfg, str(tmp_path), base_url=base, progress=False)
    assert [b["max_tokens"] for b in srv.bodies] == [16, 632, 616]
    assert all(r.status == "ok" and r.text == "[2]" for r in res)
    assert res[0].usd == pytest.approx(cost_usd(10, 16, PRICE) + cost_usd(10, 300, PRICE))

    async def empty(request, body, n):
        return reasoning_completion("", body["max_tokens"], body["max_tokens"], "length")

    srv = FakeServer(empty)
    with srv as base:
        (r,) = run_requests(make_requests(1, "empty", max_tokens=16), cfg, str(tmp_path), base_url=base,
                            progress=False)
        assert r.status == "error" and r.cause == "empty" and "reasoning tokens" in r.error and r.usd > 0
        (again,) = run_requests(make_requests(1, "empty", max_tokens=16), cfg, str(tmp_path), base_url=base,
                                progress=False)
    assert not again.cached and len(srv.bodies) == 4  # not stored: asked again


def test_known_reasoning_model_gets_room_and_reasoning_effort(tmp_path):
    srv = FakeServer(lambda request, body, n: asyncio.sleep(0, completion("[1]")))
    with srv as base:
        run_requests(make_requests(1, "o3", max_tokens=16), llm_cfg(model="o3-mini", reasoning_tokens=500,
                                                                     reasoning_effort="low"),
                     str(tmp_path), base_url=base, progress=False)
        run_requests(make_requests(1, "plain", max_tokens=16), llm_cfg(), str(tmp_path), base_url=base,
                     progress=False)
    assert srv.bodies[0]["max_tokens"] == 516 and srv.bodies[0]["reasoning_effort"] == "low"
    assert srv.bodies[1]["max_tokens"] == 16 and "reasoning_effort" not in srv.bodies[1]


def test_simulator_answers_are_never_used_for_a_real_endpoint(sim, tmp_path, monkeypatch):
    """The same prompts, model name and cache folder: first the simulator, then a real endpoint.
    The endpoint is in every key, so the second run pays for each answer, and says whose
    answers the folder also holds."""
    from selectllm.config import Config
    from selectllm.select.decide import build_requests
    from selectllm.select.plan import Group

    monkeypatch.setenv("SELECTLLM_TEST_KEY", "sk-test")
    groups = [Group(group_id=i, cluster_id=i, candidates=[f"{i}-{j}" for j in range(4)], quota=1)
              for i in range(5)]
    texts = {f"{i}-{j}": {"instruction": f"task {i} {j} " + "x " * j, "input": ""} for i in range(5) for j in range(4)}
    sim_cfg = Config(llm=llm_cfg(provider="simulator"))
    real = FakeServer(lambda request, body, n: asyncio.sleep(0, completion('{"selected": [1]}')))
    with real as base:
        real_cfg = Config(llm=llm_cfg(provider="openai", base_url=base, api_key_env="SELECTLLM_TEST_KEY"))
        first = run_requests(build_requests(sim_cfg, groups, texts), sim_cfg.llm, str(tmp_path), base_url=sim.base_url,
                             progress=False)
        report: dict = {}
        second = run_requests(build_requests(real_cfg, groups, texts), real_cfg.llm, str(tmp_path), progress=False,
                              report=report)
    assert all(r.status == "ok" and not r.cached for r in first + second)
    assert len(real.bodies) == 5
    assert report["other_endpoints"] == [f"simulator model {MODEL}"]


def test_connection_refused_is_retried_then_error(tmp_path):
    (r,) = run_requests(make_requests(1), llm_cfg(max_retries=2), str(tmp_path),
                        base_url="http://127.0.0.1:9/v1", progress=False, retry_base_s=0.01)
    assert r.status == "error" and r.attempts == 3 and r.usd == 0


# ---------------------------------------------------------------- helpers


@pytest.mark.subprocess
def test_llm_endpoint_starts_a_simulator(tmp_path):
    cfg = llm_cfg(model="any-model-name", simulator=SimulatorConfig(latency_ms=0))
    log = tmp_path / "sim.jsonl"
    with llm_endpoint(cfg, str(log)) as base:
        assert base.startswith("http://127.0.0.1:") and base.endswith("/v1")
        (r,) = run_requests(make_requests(1), cfg, str(tmp_path / "c"), base_url=base, progress=False)
        assert r.status == "ok"
    assert json.loads(log.read_text().splitlines()[0])["status"] == 200
    with llm_endpoint(llm_cfg(provider="openai", base_url="http://x/v1")) as base:
        assert base == "http://x/v1"


def test_run_requests_inside_a_running_loop(sim, tmp_path):
    async def main():
        return run_requests(make_requests(2, "loop"), llm_cfg(), str(tmp_path), base_url=sim.base_url,
                            progress=True)

    res = asyncio.run(main())
    assert [r.status for r in res] == ["ok", "ok"]
