"""Shown order, repair asks, tries across runs, two orders, and the run's LLM health.

Most tests drive :func:`selectllm.select.decide.decide_groups` with a fake ``send`` that answers
through a chooser of the test's and stores each answer in the run's real answer cache, as the LLM
layer does (so reruns find them); one runs the select stage against the simulator.
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import pytest

from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.llm.cache import AnswerCache
from selectllm.rundir import RunDir
from selectllm.select import decide
from selectllm.select.decide import build_requests, decide_groups, shown_order
from selectllm.select.health import check_share, health, health_line
from selectllm.select.plan import Group
from selectllm.select.prompts import example_ids

GROUPS = [Group(group_id=i, cluster_id=i, candidates=[f"g{i}c{j}" for j in range(6)], quota=1) for i in range(40)]
TEXTS = {c: {"instruction": f"task {c}", "input": ""} for g in GROUPS for c in g.candidates}
SHOWN = re.compile(r'<candidate id="(\d+)">\s*### Instruction:\s*task (\S+)')


def shown_ids(req) -> list[str]:
    """The candidate ids in the order the request shows them (the first user message)."""
    user = next(m["content"] for m in req.messages if m["role"] == "user")
    return [c for _, c in SHOWN.findall(user)]


class FakeLLM:
    """Answers with ``chooser(request) -> text``, stores every answer in the run's cache (as the
    LLM layer does) and serves cached keys without asking; remembers what it was asked."""

    def __init__(self, chooser):
        self.chooser, self.asked, self.priors = chooser, [], []

    def __call__(self, ctx, requests, prior_usd=0.0, log_name="requests.jsonl"):
        cache = AnswerCache(ctx.run.uri("cache", "llm"))
        self.priors.append(prior_usd)
        out = []
        for r in requests:
            rec = cache.get(r.key)
            if rec is None:
                self.asked.append(r)
                rec = {"text": self.chooser(r), "usd": 0.01}
                cache.put(r.key, rec)
            out.append(SimpleNamespace(group_id=r.group_id, status="ok", text=rec["text"], error=None,
                                       input_tokens=100, output_tokens=5, usd=rec["usd"]))
        ctx.llm_counts = {"structured_output": "text"}
        return out


def _ctx(tmp_path, *sets):
    cfg = load_config(None, ["llm.structured_output='off'", *sets])
    return SimpleNamespace(cfg=cfg, run=RunDir(str(tmp_path)), input=lambda name: None)


@pytest.fixture
def fake(monkeypatch):
    def install(chooser):
        llm = FakeLLM(chooser)
        monkeypatch.setattr(decide, "send", llm)
        monkeypatch.setattr(decide, "lookup", lambda ctx, ids, cols: {i: TEXTS[i] for i in ids})
        return llm
    return install


def test_candidates_are_shown_in_a_seeded_order_that_is_recorded(tmp_path):
    cfg = _ctx(tmp_path).cfg
    a, b = build_requests(cfg, GROUPS[:2], TEXTS), build_requests(cfg, GROUPS[:2], TEXTS)
    assert [r.key for r in a] == [r.key for r in b]  # deterministic: the cache still works
    firsts = {shown_ids(r)[0] for r in build_requests(cfg, GROUPS, TEXTS)}
    assert len({f[-2:] for f in firsts}) > 3  # the center (c0) is not always shown first
    for g, r in zip(GROUPS, build_requests(cfg, GROUPS, TEXTS)):
        order = shown_order(g, cfg.select.seed)
        assert shown_ids(r) == [g.candidates[i] for i in order]
    other = load_config(None, ["llm.structured_output='off'", "select.seed=7"])
    assert build_requests(other, GROUPS[:1], TEXTS)[0].key != a[0].key


def test_the_format_example_points_at_no_candidate(tmp_path):
    (req,) = build_requests(_ctx(tmp_path, "select.picks_per_prompt=2").cfg,
                            [Group(0, 0, [f"c{i}" for i in range(6)], 2)], {f"c{i}": {"instruction": "t", "input": ""}
                                                                          for i in range(6)})
    user = req.messages[-1]["content"]
    assert example_ids(6, 2) == [8, 11] and "e.g. [8], [11]" in user
    assert all(not 1 <= i <= 6 for i in example_ids(6, 2))


def test_a_position_biased_model_does_not_reproduce_the_center_pick(tmp_path, fake):
    fake(lambda r: "[1]")  # always the first shown candidate
    decisions = decide_groups(_ctx(tmp_path), GROUPS)
    centers = sum(d["chosen_ids"] == [d["candidate_ids"][0]] for d in decisions)
    assert centers < len(GROUPS) / 2  # 1 in 6 expected; before shuffling it was every group
    for d in decisions:
        assert d["picked_positions"] == [1] and d["chosen_ids"] == [d["candidate_ids"][d["shown_order"][0]]]
    h = health(decisions)
    assert h["position1_share"] == 1.0 and h["shown"] == 6 and h["llm_share"] == 1.0


def test_the_llm_free_pick_is_not_the_center(tmp_path, fake):
    fake(lambda r: "I cannot choose.")
    decisions = decide_groups(_ctx(tmp_path), GROUPS)
    assert {d["status"] for d in decisions} == {"fallback"}
    assert sum(d["chosen_ids"] == [d["candidate_ids"][0]] for d in decisions) < len(GROUPS) / 2
    assert {d["cause"] for d in decisions} == {"unusable: no_ids"}


def test_an_unusable_answer_is_repaired_once_and_cached_under_its_own_key(tmp_path, fake):
    llm = fake(lambda r: "[2]" if r.meta.get("repair") else "I like them all")
    ctx = _ctx(tmp_path)
    (d,) = decide_groups(ctx, GROUPS[:1])
    assert [bool(r.meta.get("repair")) for r in llm.asked] == [False, True]
    repair = llm.asked[1]
    assert repair.messages[-2] == {"role": "assistant", "content": "I like them all"}
    assert "between 1 and 6" in repair.messages[-1]["content"] and repair.key != llm.asked[0].key
    assert d["status"] == "ok" and d["asks"] == 2 and "repaired" in d["parse"] and d["chosen_by"] == ["llm"]
    assert d["usd"] == pytest.approx(0.02)  # both asks billed
    assert llm.priors[1] == pytest.approx(0.01)  # the first ask counts against the cap of the repair round
    llm.asked.clear()
    (again,) = decide_groups(ctx, GROUPS[:1])  # a rerun pays nothing: both answers are cached
    assert llm.asked == [] and again["chosen_ids"] == d["chosen_ids"]


def test_an_answer_still_unusable_is_not_final_a_rerun_asks_again(tmp_path, fake):
    llm = fake(lambda r: "no idea")
    ctx = _ctx(tmp_path)
    (d,) = decide_groups(ctx, GROUPS[:1])
    assert d["status"] == "fallback" and d["asks"] == 2 and len(llm.asked) == 2
    first_order = d["shown_order"]
    llm.chooser = lambda r: "[3]"
    llm.asked.clear()
    (d2,) = decide_groups(ctx, GROUPS[:1])  # e.g. --force: try 1, a new order and key
    assert len(llm.asked) == 1 and llm.asked[0].meta["attempt"] == 1
    assert llm.priors[-1] == pytest.approx(0.02)  # the earlier try's spend counts against the cap
    assert d2["status"] == "ok" and d2["picked_positions"] == [3] and d2["shown_order"] != first_order
    llm.asked.clear()
    assert decide_groups(ctx, GROUPS[:1])[0]["chosen_ids"] == d2["chosen_ids"] and llm.asked == []


def test_two_orders_keep_what_both_agree_on(tmp_path, fake):
    ctx = _ctx(tmp_path, "select.permutations=2", "select.picks_per_prompt=2", "select.candidates_per_prompt=6")
    groups = [Group(g.group_id, g.cluster_id, g.candidates, 2) for g in GROUPS[:10]]
    assert len(build_requests(ctx.cfg, groups, TEXTS)) == 20  # estimate prices both orders
    # a judge by content: always the candidates c1 and c4, wherever they are shown
    judge = fake(lambda r: ", ".join(f"[{shown_ids(r).index(c) + 1}]" for c in shown_ids(r) if c[-2:] in ("c1", "c4")))
    for d in decide_groups(ctx, groups):
        assert sorted(c[-2:] for c in d["chosen_ids"]) == ["c1", "c4"] and d["agreement"] == 1.0
    assert len(judge.asked) == 20
    ctx2 = _ctx(tmp_path / "b", "select.permutations=2", "select.picks_per_prompt=2", "select.candidates_per_prompt=6")
    fake(lambda r: "[1], [2]")  # position bias: the two orders (one the reverse of the other) never agree
    decisions = decide_groups(ctx2, groups)
    for d in decisions:
        assert d["agreement"] == 0.0 and d["chosen_by"] == ["fallback", "fallback"] and d["status"] == "ok"
    assert health(decisions)["agreement"] == 0.0


def test_health_counts_and_the_share_check():
    ok = {"status": "ok", "chosen_by": ["llm"], "candidate_ids": list("abcdef"), "shown_order": [0] * 6,
          "picked_positions": [2], "parse": [], "cause": ""}
    bad = {**ok, "status": "error", "chosen_by": ["fallback"], "picked_positions": [], "cause": "error: http_500"}
    junk = {**ok, "status": "fallback", "chosen_by": ["fallback"], "picked_positions": [],
            "parse": ["no_ids", "repaired"], "cause": "unusable: no_ids"}
    small = {**ok, "chosen_by": ["no_llm", "no_llm"], "shown_order": None, "picked_positions": []}
    stopped = {**bad, "status": "budget_stopped", "cause": "budget_stopped"}
    h = health([ok, bad, bad, junk, small, stopped])
    assert (h["llm_groups"], h["llm_decided"], h["llm_share"]) == (4, 1, 0.25)
    assert h["fallback_causes"] == {"error: http_500": 2, "unusable: no_ids": 1, "budget_stopped": 1}
    assert h["parse_classes"] == {"no_ids": 1, "repaired": 1} and h["pick_positions"] == {"2": 1}
    line = health_line(h, "json_schema")
    assert line.startswith("LLM health: decided 1/4 groups (25%)") and "structured output: json_schema" in line
    with pytest.raises(UserError, match=r"commonest cause: error: http_500 \(2 groups\); fix: check llm.base_url"):
        check_share(h, 0.5)
    check_share(h, 0.25)  # at the threshold: fine
    check_share(health([small, stopped]), 0.9)  # nothing asked but budget stops: strict_budget decides


@pytest.mark.ray
def test_a_run_that_never_hears_the_llm_fails_with_one_line(tmp_path, monkeypatch):
    """Unusable answers (the simulator's, then a real HTTP server's garbage) and an unreachable
    endpoint: the select stage fails with one line naming the cause and the fix."""
    from selectllm.pipeline import BY_NAME, run_stage

    from helpers import FakeServer, completion, free_port, make_pool_run, pool_config

    from selectllm.engines import shutdown_owned

    make_pool_run(tmp_path)
    cfg = pool_config(tmp_path, "llm.simulator.malformed_rate=1.0")
    monkeypatch.setenv("GARBAGE_KEY", "sk-none")
    real = ["llm.provider=openai", "llm.api_key_env=GARBAGE_KEY", "llm.max_retries=0",
            "llm.price.input_per_mtok=0", "llm.price.output_per_mtok=0"]
    garbage = FakeServer(lambda request, body, n: asyncio.sleep(0, completion(
        "Sure! These instructions are all about cooking and gardening, which I love.")))
    try:
        with pytest.raises(UserError) as e:
            run_stage(cfg, RunDir(str(tmp_path)), BY_NAME["select"])
        msg = str(e.value)
        assert "\n" not in msg and "commonest cause: unusable: no_ids" in msg and "select.min_llm_share 0.5" in msg
        assert len(AnswerCache(str(tmp_path / "cache" / "llm"))) > 0  # the answers bought stay cached
        with garbage as base:  # a real server whose model answers prose without identifiers
            with pytest.raises(UserError) as e:
                run_stage(pool_config(tmp_path, *real, f"llm.base_url={base}"), RunDir(str(tmp_path)),
                          BY_NAME["select"], force=True)
        msg = str(e.value)
        assert "\n" not in msg and "commonest cause: unusable: no_ids" in msg and "answers could not be read" in msg
        asked = int(re.search(r"decided 0 of (\d+) groups", msg).group(1))
        assert len(garbage.bodies) >= 2 * asked  # each group asked, and each unusable answer repaired once
        assert any("could not be used" in str(b["messages"][-1]["content"]) for b in garbage.bodies)
        closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the model is unreachable
        with pytest.raises(UserError) as e:
            run_stage(pool_config(tmp_path, *real, f"llm.base_url={closed}"), RunDir(str(tmp_path)),
                      BY_NAME["select"], force=True)
        msg = str(e.value)
        assert "\n" not in msg and "decided 0 of" in msg and "commonest cause: error: unreachable" in msg
        assert "fix: check llm.base_url" in msg
        cfg = pool_config(tmp_path, "llm.simulator.malformed_rate=1.0", "select.min_llm_share=0")
        entry = run_stage(cfg, RunDir(str(tmp_path)), BY_NAME["select"])
    finally:
        shutdown_owned()  # the Ray the stage started: later unmarked tests must not find it up
    h = entry["counts"]["llm_health"]
    assert h["llm_decided"] == 0 and h["fallback_causes"] == {"unusable: no_ids": h["llm_groups"]}


def test_the_report_shows_where_picks_stood():
    from selectllm.report import html

    decisions = [{"status": "ok", "chosen_by": ["llm"], "candidate_ids": list("abcdef"), "shown_order": [0] * 6,
                  "picked_positions": [p], "parse": [], "cause": ""} for p in (1, 1, 1, 2, 6)]
    h = health(decisions)
    plots = []
    r = SimpleNamespace(stages={"select": {"counts": {"llm_health": h, "structured_output": "text"}}},
                        inputs=SimpleNamespace(stage=lambda name: "select"), metrics={},
                        plot=lambda *a: plots.append(a) or "<img>")
    out = html.positions_section(r)
    assert 'id="positions"' in out and "picks at shown position 1: 60% (uniform 17%)" in out
    assert "60.0%" in out and "16.7%" in out and len(plots) == 1 and r.metrics["llm_health"] == h
    r.stages = {"select": {"counts": {}}}  # an LLM-free strategy: no section
    assert html.positions_section(r) == ""
