"""select.reasons: a one-line reason per chosen row, asked in the same request, parsed robustly,
priced, stored in decisions and written to selected.jsonl."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from selectllm.config import load_config
from selectllm.errors import UserError
from selectllm.llm.simulator import answer_text, score_reason
from selectllm.select.decide import build_requests
from selectllm.select.parse import MAX_REASON_CHARS, parse_selection
from selectllm.select.plan import Group
from selectllm.select.prompts import REASON_TOKENS, REASONS_SCHEMA, paper_messages, selection_messages
from selectllm.select.stage import STAGE

from helpers import CLUSTERS, SAMPLE, plant_upstream

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,positions,reasons", [
    ('{"choices": [{"id": 3, "reason": "Most detailed."}, {"id": 1, "reason": "Clear."}]}', [2, 0],
     ["Most detailed.", "Clear."]),
    ('```json\n{"choices": [{"id": "2", "reason": "multi\\nline\\tand\\u0000odd"}]}\n```', [1], ["multi line and odd"]),
    ('{"choices": [{"id": 2}, {"id": 9, "reason": "not offered"}, 4]}', [1, 3], ["", ""]),
    ('{"selected": [2, 3]}', [1, 2], ["", ""]),
    ("[3] Asks for a proof with constraints.\n[1] - Short but precise.", [2, 0],
     ["Asks for a proof with constraints.", "Short but precise."]),
    ("Here you go:\n1. [4]: clearer than [2] and longer\n- [2] — has an input", [3, 1],
     ["clearer than [2] and longer", "has an input"]),
    ("[3], [1]", [2, 0], ["", ""]),  # the paper's form, no reasons
    ("[3, 1] because both are good", [2, 0], ["", ""]),
    ("I pick [3] because it is long", [2], [""]),
    ("[3]\n[3] again\n[7] not offered", [2], [""]),
])
def test_reasons_parse_every_form(text, positions, reasons):
    p = parse_selection(text, 5, 2, reasons=True)
    assert p.positions == positions and p.reasons == reasons


@pytest.mark.parametrize("garbage", ["", "   ", "no ids at all", "{not json", '{"choices": "x"}', "[]",
                                     '{"choices": [null, {"id": true}, {"id": 2.5}]}', "\x00\x01[", "[" * 10000])
def test_reasons_garbage_gives_no_pick_and_a_problem(garbage):
    p = parse_selection(garbage, 5, 2, reasons=True)
    assert p.positions == [] and p.reasons == [] and p.problems


def test_reason_is_one_bounded_line():
    p = parse_selection("[2] " + "very long reason " * 100, 5, 1, reasons=True)
    (why,) = p.reasons
    assert len(why) == MAX_REASON_CHARS and "\n" not in why and why.endswith("\u2026")


def test_without_reasons_a_bracket_later_in_an_answer_line_is_not_a_pick():
    p = parse_selection("[3] Asks for a proof [1]", 5, 2)
    assert p.positions == [2] and p.reasons == [""] and p.classes == ["too_few"]


def test_simulator_answers_with_its_heuristic_reasons():
    cands = [("Say hi.", ""), ("Write a detailed proof that the square root of two is irrational.", ""),
             ("Summarize the text.", "A long article about the economy and jobs.")]
    for structured in (True, False):
        msgs = selection_messages(cands, 2, structured, reasons=True)
        text = answer_text(msgs, REASONS_SCHEMA if structured else None)
        p = parse_selection(text, 3, 2, reasons=True)
        assert p.positions and len(p.positions) == 2
        for pos, why in zip(p.positions, p.reasons):
            body = f"### Instruction:\n{cands[pos][0]}" + (f"\n### Input:\n{cands[pos][1]}" if cands[pos][1] else "")
            assert why == score_reason(body)
    # without reasons the answers are as before
    assert answer_text(selection_messages(cands, 1, False), None).startswith("[")
    plain = paper_messages(cands, 2, reasons=True)
    assert "[5] <one-line reason>" in plain[0]["content"]  # the example points at no candidate (example_ids)
    assert parse_selection(answer_text(plain, None), 3, 2, reasons=True).reasons[0].startswith("score ")


def cfg_with(tmp_path, **select):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"select": {"strategy": "selectllm", **select}}))
    return load_config(str(p))


def test_reasons_change_the_request_its_price_and_the_settings_hash(tmp_path):
    group = Group(group_id=0, cluster_id=0, candidates=["a", "b", "c"], quota=2)
    texts = {i: {"instruction": f"task {i}", "input": ""} for i in "abc"}
    plain, with_reasons = cfg_with(tmp_path), cfg_with(tmp_path, reasons=True)
    (r0,) = build_requests(plain, [group], texts)
    (r1,) = build_requests(with_reasons, [group], texts)
    assert r1.key != r0.key and r1.max_tokens == r0.max_tokens + 2 * REASON_TOKENS
    assert r1.response_format == REASONS_SCHEMA and "one-line reason" in r1.text_messages[-1]["content"]
    assert "[5] <one-line reason>" in r1.text_messages[-1]["content"]  # example_ids: no real candidate
    assert STAGE.settings.hash(plain) != STAGE.settings.hash(with_reasons)


def test_reasons_need_an_llm_that_picks_among_candidates(tmp_path):
    with pytest.raises(UserError, match="select.reasons"):
        cfg_with(tmp_path, strategy="random", reasons=True)
    assert cfg_with(tmp_path, strategy="selectllm-paper", reasons=True).select.reasons


@pytest.mark.subprocess
def test_select_with_reasons_writes_them_and_estimate_prices_them(tmp_path):
    """The select stage on a planted upstream, with the simulator: decisions hold the reasons,
    selected.jsonl has `reason` for the LLM's picks, estimate counts the extra answer tokens."""
    import fsspec


    run = tmp_path / "run"
    plant_upstream(fsspec.filesystem("file", auto_mkdir=True), str(run))
    cfg = {"run_dir": str(run), "input": {"paths": [str(SAMPLE)]},
           "select": {"strategy": "selectllm", "budget": CLUSTERS, "candidates_per_prompt": 4, "reasons": True},
           "llm": {"provider": "simulator", "engine": "local", "concurrency": 4, "simulator": {"latency_ms": 0}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    from selectllm.estimate import estimate_cost  # what `selectllm estimate` prints once upstream is complete
    from selectllm.rundir import RunDir

    est = estimate_cost(load_config(str(tmp_path / "c.yaml")), RunDir(str(run)))
    assert est["prompts"] == CLUSTERS and est["max_output_tokens"] == CLUSTERS * (64 + REASON_TOKENS)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "selectllm.cli", "select", str(tmp_path / "c.yaml")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    decisions = pq.read_table(run / "select" / "decisions.parquet").to_pylist()
    assert all(d["status"] == "ok" and len(d["chosen_reasons"]) == len(d["chosen_ids"]) == 1 for d in decisions)
    assert all(r.startswith("score ") for d in decisions for r in d["chosen_reasons"])
    why = {d["chosen_ids"][0]: d["chosen_reasons"][0] for d in decisions}
    selected = [json.loads(x) for x in (run / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == CLUSTERS and all(s["reason"] == why[s["id"]] for s in selected)
    assert (run / "logs" / "simulator.jsonl").read_text().count('"status": 200') == CLUSTERS
