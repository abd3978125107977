"""The Ray path of the LLM layer: one shared limiter actor, an async actor pool, same results."""

from __future__ import annotations

import json

import pytest

from selectllm.config import SimulatorConfig
from selectllm.errors import UserError
from selectllm.llm.budget import cost_usd
from selectllm.llm.client import run_requests
from selectllm.llm.limiter import window_shape
from selectllm.llm.simulator import start_simulator
from selectllm.llm.tokens import count_message_tokens

from helpers import FASTAPI_422, FakeServer, MODEL, PRICE, SCHEMA, completion, error, llm_cfg, make_requests, with_text_form

RPM = 1200  # client bucket: 20 at once, then 19.67/s


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim") / "sim.jsonl"
    with start_simulator(SimulatorConfig(latency_ms=30, rpm=RPM), str(log)) as h:
        h.log_path = log
        yield h


@pytest.fixture(scope="module")
def pool(ray_local, sim, tmp_path_factory):
    from selectllm.llm.ray_pool import RayLLMPool

    cfg = llm_cfg(rpm=RPM, concurrency=8)
    with RayLLMPool(cfg, str(tmp_path_factory.mktemp("cache")), api_key="sk-test", base_url=sim.base_url,
                    actors=2) as p:
        p.run(make_requests(4, "warm-up"), progress=False)  # actors started, connections open
        yield p


def sim_log(sim) -> list[dict]:
    if not sim.log_path.exists():
        return []
    return [json.loads(x) for x in sim.log_path.read_text().splitlines()]


def test_two_pool_actors_share_one_limiter(pool, sim, tmp_path):
    reqs = make_requests(60, "rpm", rf=SCHEMA)
    n_before = len(sim_log(sim))
    calls = pool.limiter_snapshot()["calls"]
    stats: dict = {}
    res = pool.run(reqs, requests_log=str(tmp_path / "requests.jsonl"), progress=False, stats=stats)
    assert [r.key for r in res] == [r.key for r in reqs] and all(r.status == "ok" for r in res)
    assert stats["actors"] == 2 and all(n > 0 for n in stats["sent_per_actor"])  # both actors sent
    assert sum(stats["sent_per_actor"]) == 60
    # one limiter round trip before each request and one after it, no more
    assert {k: v - calls[k] for k, v in stats["limiter"]["calls"].items()} == {"acquire": 60, "complete": 60}
    lines = sim_log(sim)[n_before:]
    assert len(lines) == 60 and {x["status"] for x in lines} == {200}  # no 429: headers and limits honoured
    # paced by the one shared bucket, not by the 30 ms latency: past its capacity, 60 requests
    # take at least (60 - capacity) / rate seconds (a lower bound, which a loaded machine only
    # lengthens; the bucket's upper bound over every window is checked on a fake clock in
    # test_llm_core.py)
    cap, rate = window_shape(RPM)
    ts = sorted(x["ts"] for x in lines)
    assert ts[-1] - ts[0] >= (60 - cap) / rate * 0.95
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 60


def test_pool_results_equal_local_results(pool, sim, tmp_path):
    reqs = make_requests(12, "same") + make_requests(3, "same")[:1]  # a duplicate key: sent once
    n_before = len(sim_log(sim))
    ray_res = pool.run(reqs, progress=False)
    assert len(sim_log(sim)) - n_before == 12
    assert ray_res[-1].cached and ray_res[-1].text == ray_res[0].text and ray_res[-1].group_id == 0
    local = run_requests(reqs, llm_cfg(rpm=RPM), str(tmp_path), base_url=sim.base_url, progress=False,
                         engine="local")
    strip = lambda rs: [(r.key, r.group_id, r.status, r.text, r.input_tokens, r.output_tokens, r.usd, r.cached)
                        for r in rs]  # noqa: E731
    assert strip(ray_res) == strip(local)


def test_the_same_request_object_twice_is_paid_once(pool, sim):
    reqs = make_requests(3, "same-object")
    res = pool.run(reqs + [reqs[1]], progress=False)
    assert [r.cached for r in res] == [False, False, False, True] and res[3].text == res[1].text


def test_budget_is_never_exceeded_with_the_pool(pool, sim):
    reqs = make_requests(24, "budget", max_tokens=20)
    one = cost_usd(count_message_tokens(reqs[0].messages, MODEL), 20, PRICE)  # max cost of one request
    for i, (cap, prior) in enumerate([(one * 5.5, 0.0), (one * 9.2, one * 3)]):
        batch = make_requests(24, f"budget{i}", max_tokens=20)
        pool.set_budget(cap, prior)
        stats: dict = {}
        before = sim.stats()
        res = pool.run(batch, progress=False, stats=stats)
        after = sim.stats()
        spend = sum(r.usd for r in res if not r.cached)
        stopped = [r for r in res if r.status == "budget_stopped"]
        assert stopped and prior + spend <= cap
        assert stats["limiter"]["spent"] == pytest.approx(prior + spend, rel=1e-12)
        assert sum(r.input_tokens for r in res) == after["prompt_tokens"] - before["prompt_tokens"]
        assert sum(r.output_tokens for r in res) == after["completion_tokens"] - before["completion_tokens"]
        assert all(r.attempts == 0 and r.usd == 0 for r in stopped)


def test_run_requests_picks_ray_and_counts_prior_spend(ray_local, sim, tmp_path):
    reqs = make_requests(10, "prior", max_tokens=20)
    one = cost_usd(count_message_tokens(reqs[0].messages, MODEL), 20, PRICE)
    res = run_requests(reqs, llm_cfg(rpm=RPM, max_usd=one * 6.5, concurrency=4, engine="auto"), str(tmp_path),
                       base_url=sim.base_url, progress=False, prior_usd=one * 3, actors=1)  # auto: Ray is up
    ok = [r for r in res if r.status == "ok"]
    assert 3 <= len(ok) <= 5 and one * 3 + sum(r.usd for r in ok) <= one * 6.5
    assert all(r.status == "budget_stopped" for r in res if r.status != "ok")


def test_401_through_the_pool_is_one_line_without_the_key(ray_local, tmp_path, monkeypatch):
    secret = "sk-very-secret-pool-123456"
    monkeypatch.setenv("SELECTLLM_TEST_KEY", secret)

    async def handler(request, body, n):
        return error(401, f"Incorrect API key provided: {secret}", code="invalid_api_key")

    with FakeServer(handler) as base:
        with pytest.raises(UserError) as ei:
            run_requests(make_requests(4), llm_cfg(provider="openai", api_key_env="SELECTLLM_TEST_KEY", engine="auto"),
                         str(tmp_path), base_url=base, progress=False, engine="ray", actors=1)
    msg = str(ei.value)
    assert type(ei.value) is UserError and "401" in msg and "SELECTLLM_TEST_KEY" in msg
    assert secret not in msg and "\n" not in msg


def test_pool_probes_structured_output_once_for_all_actors(ray_local, tmp_path):
    """A server that rejects every response format (FastAPI's 422) sees them from one request of
    the whole pool: the driver sends the probe alone, then every actor sends the text form."""
    from aiohttp import web

    from selectllm.llm.ray_pool import run_requests_ray

    async def handler(request, body, n):
        if "response_format" in body:
            return web.json_response(FASTAPI_422, status=422)
        return completion("[2]")

    srv = FakeServer(handler)
    report: dict = {}
    stats: dict = {}
    with srv as base:
        res = run_requests_ray(with_text_form(make_requests(24, "pool-probe", rf=SCHEMA)),
                               llm_cfg(provider="openai", concurrency=4), str(tmp_path), api_key="sk-test",
                               base_url=base, progress=False, actors=2, stats=stats, report=report)
    assert all(r.status == "ok" and r.text == "[2]" for r in res)
    # the probe alone walks down the ladder (3 rejected forms, unbilled), then the text form everywhere
    assert sum("response_format" in b for b in srv.bodies) == 3 and len(srv.bodies) == 27
    assert all(n > 0 for n in stats["sent_per_actor"])  # both actors sent, in the text form
    assert report["structured_output"] == "text"
    assert report["structured_fallback"].startswith("json_schema: HTTP 422 naming the response format")
