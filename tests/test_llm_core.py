"""Pure parts of the LLM layer: tokens, request keys, budget, token buckets, answer cache."""

from __future__ import annotations

import json
import random

import pytest

from selectllm.config import PriceConfig
from selectllm.llm import tokens
from selectllm.llm.budget import Budget, cost_usd, max_request_cost
from selectllm.llm.cache import AnswerCache
from selectllm.llm.gate import Gate
from selectllm.llm.limiter import (RateLimiter, TokenBucket, format_duration, parse_duration,
                                   retry_after_seconds, window_shape)
from selectllm.llm.types import LLMResult, endpoint_id, request_key

MODEL = "gpt-4o-mini"


# ---------------------------------------------------------------- tokens


def test_message_tokens_follow_openai_recipe():
    msgs = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hello there!"}]
    per = sum(3 + tokens.count_text_tokens(m["role"], MODEL) + tokens.count_text_tokens(m["content"], MODEL)
              for m in msgs)
    assert tokens.count_message_tokens(msgs, MODEL) == per + 3
    named = [{"role": "user", "name": "bob", "content": "hi"}]
    assert tokens.count_message_tokens(named, MODEL) == 3 + 3 + 1 + sum(
        tokens.count_text_tokens(v, MODEL) for v in named[0].values())


def test_encoding_is_real_and_cached():
    # no internet here: the bundled offline ranks (or a newer downloaded one), never the estimate
    assert tokens.encoding_name(MODEL) != "estimate(chars/4)"
    assert tokens.get_encoding(MODEL) is tokens.get_encoding(MODEL)
    assert tokens.count_text_tokens("hello world", MODEL) == 2


def test_truncate_to_tokens():
    text = "one two three four five six seven eight nine ten"
    cut, n, truncated = tokens.truncate_to_tokens(text, MODEL, 3)
    assert truncated and n == 3 and text.startswith(cut)
    same, n2, t2 = tokens.truncate_to_tokens(text, MODEL, 1000)
    assert same == text and not t2 and n2 == tokens.count_text_tokens(text, MODEL)


def test_estimate_fallback(monkeypatch):
    monkeypatch.setitem(tokens._by_model, "no-tokenizer-model", None)
    assert tokens.count_text_tokens("abcdefghi", "no-tokenizer-model") == 3
    msgs = [{"role": "user", "content": "abcdefgh"}]  # 4 + 8 chars -> 3 tokens, +4 per message, +3
    assert tokens.count_message_tokens(msgs, "no-tokenizer-model") == 3 + 4 + 3


# ---------------------------------------------------------------- request keys / result


def test_request_key_is_canonical():
    msgs = [{"role": "user", "content": "x"}]
    a = request_key(MODEL, msgs, {"max_tokens": 5, "temperature": 0}, "v1", endpoint="simulator")
    b = request_key(MODEL, [{"content": "x", "role": "user"}], {"temperature": 0, "max_tokens": 5}, "v1",
                    endpoint="simulator")
    assert a == b and len(a) == 64
    assert a != request_key(MODEL, msgs, {"max_tokens": 5, "temperature": 0}, "v2", endpoint="simulator")
    assert a != request_key("gpt-4o", msgs, {"max_tokens": 5, "temperature": 0}, "v1", endpoint="simulator")
    # the same model name behind another endpoint is another answer
    real = endpoint_id("openai", "http://127.0.0.1:8080/v1/")
    assert real == endpoint_id("openai", "HTTP://127.0.0.1:8080/v1") == "openai:http://127.0.0.1:8080/v1"
    assert a != request_key(MODEL, msgs, {"max_tokens": 5, "temperature": 0}, "v1", endpoint=real)
    assert endpoint_id("openai", None) == "openai:https://api.openai.com/v1"
    assert endpoint_id("simulator", None) == "simulator"


def test_result_to_dict_roundtrip():
    r = LLMResult(key="k", group_id=3, status="ok", text="[1]", input_tokens=5)
    assert LLMResult(**r.to_dict()) == r


# ---------------------------------------------------------------- budget


def test_cost_and_max_cost():
    price = PriceConfig(input_per_mtok=2.0, output_per_mtok=8.0)
    assert cost_usd(1_000_000, 0, price) == pytest.approx(2.0)
    assert cost_usd(500, 250, price) == pytest.approx(500 * 2e-6 + 250 * 8e-6)
    assert max_request_cost(100, 50, price) == pytest.approx(cost_usd(100, 50, price))


def test_budget_reserve_and_settle():
    b = Budget(1.0)
    assert b.try_reserve(0.6)
    assert not b.try_reserve(0.5)  # 0.6 + 0.5 > 1
    assert b.could_fit_later(0.5)  # once the 0.6 settles lower it may fit
    b.settle(0.6, 0.2)
    assert b.spent == pytest.approx(0.2) and b.reserved == 0.0
    assert b.try_reserve(0.5)
    assert not b.try_reserve(0.31)
    b.settle(0.5, 0.5)
    assert not b.could_fit_later(0.31)  # nothing outstanding: never
    assert not b.try_reserve(0.3)  # exactly the cap: refused (a billionth of headroom against float sums)
    assert b.try_reserve(0.3 - 1e-6)
    assert b.remaining == pytest.approx(0.0, abs=1e-6)


def test_budget_never_exceeded_under_random_traffic():
    rng = random.Random(7)
    b = Budget(0.05)
    open_res: list[float] = []
    for _ in range(5000):
        if open_res and rng.random() < 0.5:
            r = open_res.pop(rng.randrange(len(open_res)))
            b.settle(r, r * rng.random())  # never bills more than reserved
        else:
            c = rng.uniform(0, 0.004)
            if b.try_reserve(c):
                open_res.append(c)
        assert b.spent + b.reserved <= 0.05 + 1e-12
    for r in open_res:
        b.settle(r, r)
    assert b.spent <= 0.05 + 1e-12


# ---------------------------------------------------------------- limiter


def test_duration_format_roundtrip():
    assert format_duration(0) == "0s"
    assert format_duration(0.02) == "20ms"
    assert format_duration(1) == "1s"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"
    assert format_duration(3723) == "1h2m3s"
    for s in (0.02, 1, 1.5, 59.25, 360, 3723):
        assert parse_duration(format_duration(s)) == pytest.approx(s)
    assert parse_duration("6m0s") == 360 and parse_duration("2") == 2 and parse_duration("junk") is None


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after": "2"}) == 2
    assert retry_after_seconds({"Retry-After": "2", "retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_seconds({}) is None


def test_token_bucket_fake_clock():
    b = TokenBucket(capacity=60, rate_per_s=1.0, now=0.0)
    assert all(b.reserve(1, 0.0) == 0.0 for _ in range(60))
    assert b.reserve(1, 0.0) == pytest.approx(1.0)  # the 61st waits for one refill
    assert b.reserve(1, 0.0) == pytest.approx(2.0)  # queued behind it
    assert b.reserve(1, 10.0) == pytest.approx(0.0)  # 10 s refilled 10, debt was 2, then -1
    assert b.available(10.0) == pytest.approx(7.0)
    assert b.available(1000.0) == 60.0  # capped at capacity
    b.refund(5)
    assert b.available(1000.0) == 60.0


def test_window_shape_never_lets_more_than_the_limit_through_a_minute():
    for limit in (2, 5, 60, 600, 1_000_000):
        cap, rate = window_shape(limit)
        assert cap + 61 * rate == pytest.approx(limit) and cap >= 1 and rate > 0
    assert window_shape(600) == (5.0, 595 / 61)  # 97.5 % of the limit sustained


def _sends(rl: RateLimiter, arrivals: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Send times of requests (arrival time, tokens) that wait as long as the limiter says."""
    return [(t + rl.reserve(tok, t), tok) for t, tok in arrivals]


def _max_in_window(sends: list[tuple[float, int]], units: bool) -> float:
    sends = sorted(sends)
    best, j, acc = 0.0, 0, 0.0
    for i, (t, tok) in enumerate(sends):
        acc += tok if units else 1
        while sends[j][0] <= t - 60.0:
            acc -= sends[j][1] if units else 1
            j += 1
        best = max(best, acc)
    return best


def test_rate_limiter_keeps_every_sliding_minute_under_both_limits():
    rng = random.Random(3)
    for rpm, tpm in ((120, 20_000), (600, 1_000_000), (30, 3_000)):
        rl = RateLimiter(rpm=rpm, tpm=tpm, now=0.0)
        t, arrivals = 0.0, []
        for _ in range(4 * rpm):  # bursts and lulls, 4 minutes' worth of requests
            t += rng.choice([0.0, 0.0, 0.01, 0.5, 3.0])
            arrivals.append((t, rng.randint(1, max(1, tpm // rpm * 2))))
        sends = _sends(rl, arrivals)
        assert _max_in_window(sends, units=False) <= rpm
        assert _max_in_window(sends, units=True) <= tpm
        span = sends[-1][0] - sends[0][0]
        assert span > 120  # the limits, not the arrivals, decided the pace


def test_rate_limiter_requests_and_tokens():
    rl = RateLimiter(rpm=120, tpm=12_000, now=0.0)  # buckets: 1 req + 100 tok, refilled at (L - b) / 61
    r_tok = (12_000 - 100) / 61
    assert rl.reserve(100, 0.0) == 0.0  # within the burst
    w = rl.reserve(80, 0.0)  # 80 tokens short (and the request bucket one request short)
    assert w == pytest.approx(max(80 / r_tok, 1 / ((120 - 1) / 61)))
    rl.refund(300, 0.0)  # the answers used 300 fewer than booked
    assert rl.tokens.available(0.0) == pytest.approx(100)  # capped at the capacity
    rl.pause_until(30.0)
    assert rl.reserve(1, 1.0) == pytest.approx(29.0)
    assert rl.pause_remaining(40.0) == 0.0


def test_rate_limiter_observe_headers_only_tightens():
    rl = RateLimiter(rpm=1200, tpm=100_000, now=0.0)
    assert rl.requests.available(0.0) == 10
    rl.observe_headers({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "8",
                        "x-ratelimit-reset-requests": "50s", "x-ratelimit-limit-tokens": "1000000",
                        "x-ratelimit-remaining-tokens": "90000"}, now=0.0, in_flight_requests=2,
                       in_flight_tokens=500)
    assert (rl.requests.capacity, rl.requests.rate) == window_shape(600)  # tightened to 600/min
    assert rl.limits["requests"] == 600 and rl.snapshot(0.0)["rpm"] == 600
    assert rl.tokens.capacity == window_shape(100_000)[0]  # a looser server limit is ignored
    assert rl.requests.available(0.0) == 5  # capacity 5 (8 remaining - 2 in flight = 6 is looser)
    assert rl.tokens.available(0.0) == pytest.approx(window_shape(100_000)[0])
    rl.observe_headers({"x-ratelimit-remaining-requests": "3"}, now=0.0, in_flight_requests=1)
    assert rl.requests.available(0.0) == 2  # clamped to what the server says is left
    rl.observe_headers({"x-ratelimit-remaining-requests": "50"}, now=0.0)  # looser: no change
    assert rl.requests.available(0.0) == 2
    rl.observe_headers(None, now=0.0)
    r = window_shape(600)[1]
    waits = [rl.reserve(1, 0.0) for _ in range(4)]
    assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(1 / r) and waits[3] == pytest.approx(2 / r)


def test_gate_books_money_before_slots_and_settles_both():
    g = Gate(rpm=1200, tpm=120_000, max_usd=1.0, now=0.0)  # buckets: 10 requests, 1000 tokens
    assert g.acquire(0.6, 100, 0.0)[0] == "ok"
    assert g.acquire(0.5, 100, 0.0)[0] == "later"  # 0.6 outstanding may settle lower
    assert g.limiter.requests.available(0.0) == 9  # a refused request books no slot
    assert g.limiter.tokens.available(0.0) == 900
    g.complete(0.0, reserved_usd=0.6, actual_usd=0.1, booked_tokens=100, refund_tokens=60,
               headers={"x-ratelimit-remaining-tokens": "50"})
    assert g.budget.spent == pytest.approx(0.1) and g.unseen_requests == 0
    assert g.limiter.tokens.available(0.0) == 50  # clamped by the server's remaining
    state, wait, _ = g.acquire(0.5, 100, 0.0)
    assert state == "ok" and wait == pytest.approx(50 / g.limiter.tokens.rate)
    g.complete(0.0, reserved_usd=0.5, actual_usd=0.0, booked_tokens=100, refund_tokens=100,
               refund_request=True, pause_s=5.0)  # a 429: nothing billed, everyone paused
    assert g.acquire(0.0, 1, 1.0)[1:] == (pytest.approx(4.0), pytest.approx(4.0))
    g.complete(1.0, reserved_usd=0.0, actual_usd=0.0, booked_tokens=1)
    assert g.acquire(0.95, 1, 10.0)[0] == "stop"  # 0.1 spent + 0.95 > 1 and nothing outstanding
    pauses = []  # a burst of 429s without retry-after: everyone pauses 1, 2, 4 ... s
    for t in (20.0, 20.1, 20.2):
        g.acquire(0.0, 1, t)
        g.complete(t, reserved_usd=0.0, actual_usd=0.0, booked_tokens=1, refund_request=True, rate_limited=True)
        pauses.append(g.limiter.pause_remaining(t))
    assert pauses == [pytest.approx(1.0), pytest.approx(2.0), pytest.approx(4.0)]


# ---------------------------------------------------------------- cache


def test_cache_roundtrip(tmp_path):
    c = AnswerCache(str(tmp_path / "cache"))
    assert c.get("ab" + "0" * 62) is None and list(c.keys()) == []
    keys = [f"{i:02x}" + "f" * 62 for i in range(5)]
    for i, k in enumerate(keys):
        c.put(k, {"text": f"[{i}]", "usd": 0.001 * i})
    assert c.get(keys[3]) == {"text": "[3]", "usd": 0.003}
    assert list(c.keys()) == sorted(keys) and len(c) == 5 and keys[0] in c
    assert (tmp_path / "cache" / keys[2][:2] / f"{keys[2]}.json").is_file()
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    other = AnswerCache(str(tmp_path / "cache" / "batches"))  # a store in a sub-folder is not listed
    other.put("ab" + "c" * 62, {"state": "done"})
    assert list(c.keys()) == sorted(keys) and list(other.keys()) == ["ab" + "c" * 62]
    c.put(keys[0], {"text": "new"})  # overwrite is atomic too
    assert AnswerCache(f"file://{tmp_path}/cache").get(keys[0]) == {"text": "new"}


def test_secret_never_prints():
    import pickle

    from selectllm.llm.records import Secret

    s = Secret("sk-abc-123")
    assert "sk-abc" not in repr(s) + str(s) + f"{s}" and pickle.loads(pickle.dumps(s)).get() == "sk-abc-123"


def test_cache_torn_record_is_a_miss(tmp_path):
    c = AnswerCache(str(tmp_path))
    k = "cd" + "1" * 62
    (tmp_path / "cd").mkdir()
    (tmp_path / "cd" / f"{k}.json").write_text('{"text": "trunc')
    assert c.get(k) is None
    c.put(k, {"text": "ok"})
    assert json.loads((tmp_path / "cd" / f"{k}.json").read_text()) == {"text": "ok"}


def test_cache_memory_fs():
    c = AnswerCache("memory://selectllm-test-cache")
    k = "ee" + "2" * 62
    c.put(k, {"text": "[1]"})
    assert c.get(k) == {"text": "[1]"} and list(c.keys()) == [k]
    c.put("ef" + "3" * 62, {"text": "[2]"})
    assert len(c) == 2 and sorted(c.keys()) == sorted([k, "ef" + "3" * 62])
