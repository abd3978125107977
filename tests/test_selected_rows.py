"""``selected.jsonl``'s rows: ``source_row`` and ``status`` (llm | fallback | no_llm), decided per row.

Unit tests of the decisions' ``chosen_by`` (who picked each chosen id) and of the writer, then the
select stage on a synthetic run directory (``make_pool_run``: no Spark, no Ray; the simulator
answers in-process), checked against an oracle that reads only each decision's status and reason.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from selectllm import schemas
from selectllm.config import load_config
from selectllm.rundir import RunDir
from selectllm.select import decide
from selectllm.select.decide import decide_groups, decide_one
from selectllm.select.plan import Group, stable_permutation
from selectllm.select.stage import row_statuses

from helpers import make_pool_run, pool_config


OK = dict(status="ok", text="", error=None, input_tokens=10, output_tokens=2, usd=0.001)


def _answer(**kw):
    return SimpleNamespace(**{**OK, **kw})


GROUP = Group(group_id=0, cluster_id=3, candidates=["a", "b", "c", "d", "e"], quota=2)


@pytest.mark.parametrize("result,status,chosen,chosen_by", [
    (_answer(text="[3, 5]"), "ok", ["c", "e"], ["llm", "llm"]),
    (_answer(text="[4]"), "ok", ["d", "draw"], ["llm", "fallback"]),  # one pick: topped up
    (_answer(text="I like them all"), "fallback", ["draw"], ["fallback", "fallback"]),  # unusable answer
    (_answer(status="error", error="HTTP 500"), "error", ["draw"], ["fallback", "fallback"]),
    (_answer(status="budget_stopped"), "budget_stopped", ["draw"], ["fallback", "fallback"]),
])
def test_every_chosen_id_says_who_chose_it(result, status, chosen, chosen_by):
    """"draw": the LLM-free pick (Group.fallback: a seeded draw, not the first candidates)."""
    draw = GROUP.fallback()
    chosen = [c for x in chosen for c in (draw if x == "draw" else [x])]
    if chosen[:1] == ["d"]:  # the top-up: the first of the draw's order that is not chosen yet
        order = [GROUP.candidates[i] for i in stable_permutation(GROUP.candidates, "fallback")]
        chosen = ["d", next(c for c in order if c != "d")]
    d = decide_one(GROUP, result)
    assert (d["status"], d["chosen_ids"], d["chosen_by"]) == (status, chosen, chosen_by)


def test_a_cluster_within_its_quota_is_chosen_without_the_llm(monkeypatch, tmp_path):
    small = Group(group_id=1, cluster_id=4, candidates=["x", "y"], quota=2)
    sent = []

    def fake_send(ctx, requests, **kw):
        sent.extend(requests)
        return [SimpleNamespace(group_id=r.group_id, **{**OK, "text": "[2]"}) for r in requests]

    monkeypatch.setattr(decide, "send", fake_send)
    monkeypatch.setattr(decide, "lookup", lambda ctx, ids, cols: {i: {"instruction": i, "input": ""} for i in ids})
    ctx = SimpleNamespace(cfg=load_config(None, []), input=lambda name: None, run=RunDir(str(tmp_path)))
    big, small_d = decide_groups(ctx, [GROUP, small])
    assert [r.group_id for r in sent] == [0]  # only the group with more candidates than its quota is asked
    assert big["chosen_by"] == ["llm", "fallback"]
    assert small_d["status"] == "ok" and small_d["chosen_ids"] == ["x", "y"] and small_d["chosen_by"] == ["no_llm"] * 2


def test_row_statuses_from_decisions():
    decisions = [decide_one(GROUP, _answer(text="[4]")), decide_one(GROUP, _answer(status="error"))]
    decisions[1]["chosen_ids"] = ["p", "q"]
    selected = [("d", 3), ("a", 3), ("p", 3), ("q", 3)]
    assert row_statuses(selected, decisions) == {"d": "llm", "a": "fallback", "p": "fallback", "q": "fallback"}
    # an LLM-free strategy has no decisions: every row is no_llm
    assert row_statuses([("z", 0), ("w", 1)], []) == {"z": "no_llm", "w": "no_llm"}
    with pytest.raises(RuntimeError, match="in no decision"):
        row_statuses([("d", 3), ("nowhere", 3)], decisions)


def _oracle(d: dict) -> list[str]:
    """Status of each chosen id from the decision's status and reason alone (not chosen_by)."""
    n = len(d["chosen_ids"])
    if d["status"] != "ok":
        return ["fallback"] * n
    if "no LLM call" in d["reason"]:
        return ["no_llm"] * n
    topped = 0
    for part in d["reason"].split("; "):
        if part.endswith("pick(s) topped up from the fallback order"):
            topped = int(part.split()[0])
    return ["llm"] * (n - topped) + ["fallback"] * topped


def _run_select(tmp_path, *sets) -> tuple[list[dict], list[dict]]:
    from selectllm.pipeline import BY_NAME, run_stage

    cfg = pool_config(tmp_path, *sets)
    run_stage(cfg, RunDir(str(tmp_path)), BY_NAME["select"])
    selected = [json.loads(x) for x in (tmp_path / "selected.jsonl").read_text(encoding="utf-8").splitlines()]
    return selected, pq.read_table(tmp_path / "select" / "decisions.parquet").to_pylist()


@pytest.mark.ray
def test_selected_rows_carry_source_row_and_the_status_of_their_decision(tmp_path):
    # half of the answers are malformed: fallbacks and top-ups next to LLM picks
    make_pool_run(tmp_path)
    selected, decisions = _run_select(tmp_path, "select.budget=30", "select.picks_per_prompt=3",
                                      "llm.simulator.malformed_rate=0.5")
    assert len(selected) == 30
    assert list(selected[0]) == [*schemas.SELECTED_FIELDS]
    expect = {c: s for d in decisions for c, s in zip(d["chosen_ids"], _oracle(d), strict=True)}
    assert {r["id"]: r["status"] for r in selected} == expect
    assert {"llm", "fallback"} <= {r["status"] for r in selected}
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "dedup" / "part-00000.parquet").to_pylist()}
    for r in selected:
        src = rows[r["id"]]
        assert (r["source"], r["source_row"], r["instruction"], r["input"]) == \
            (src["source"], src["source_row"], src["instruction"], src["input"])
        assert isinstance(r["source_row"], int)


@pytest.mark.ray
def test_whole_pool_budget_needs_no_llm(tmp_path):
    make_pool_run(tmp_path)
    selected, decisions = _run_select(tmp_path, "select.budget=240")
    assert len(selected) == 240 and {r["status"] for r in selected} == {"no_llm"}
    assert all(d["input_tokens"] == 0 for d in decisions)
    assert not (tmp_path / "select" / "requests.jsonl").read_text().strip()


@pytest.mark.ray
@pytest.mark.parametrize("strategy", ["random", "kcenter", "length"])
def test_llm_free_strategies_are_no_llm(tmp_path, strategy):
    make_pool_run(tmp_path)
    selected, decisions = _run_select(tmp_path, f"select.strategy={strategy}")
    assert len(selected) == 12 and {r["status"] for r in selected} == {"no_llm"} and decisions == []
